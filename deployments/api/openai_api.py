"""OpenAI-compatible request models, response bodies and error bodies (no Ray, no I/O)."""
from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deployments.config import Depth
from orchestrator.modes import Mode, Schedule, VerifierKind

MAX_TOKENS_LIMIT = 32768


class LookaheadRequestOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Mode | None = None
    depth: Depth | None = None
    width: int | None = Field(None, ge=1, le=8)
    schedule: Schedule | None = None
    verifier: VerifierKind | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    # OpenAI clients send fields we ignore (n=1, user, ...); unknown fields are not errors there.
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    lookahead: LookaheadRequestOptions | None = None

    def overrides(self) -> dict[str, Any]:
        la = self.lookahead or LookaheadRequestOptions()
        return {"mode": la.mode, "depth": la.depth, "width": la.width, "schedule": la.schedule,
                "verifier": la.verifier, "max_tokens": self.max_completion_tokens or self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "seed": self.seed}


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)

    @field_validator("messages")
    @classmethod
    def _has_content(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.content.strip() for m in v):
            raise ValueError("messages must contain at least one non-empty message")
        return v


class CompletionRequest(_Common):
    prompt: str = Field(min_length=1)


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, stats: dict) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": stats["tokens"],
            "total_tokens": prompt_tokens + stats["tokens"], "lookahead": stats}


def chat_response(rid: str, model: str, result: dict, prompt_tokens: int) -> dict:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                         "finish_reason": result["finish_reason"], "logprobs": None}],
            "usage": usage(prompt_tokens, result["stats"]),
            "lookahead": {"steps": result["steps"]}}


def completion_response(rid: str, model: str, result: dict, prompt_tokens: int) -> dict:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": result["text"], "finish_reason": result["finish_reason"],
                         "logprobs": None}],
            "usage": usage(prompt_tokens, result["stats"]),
            "lookahead": {"steps": result["steps"]}}


def stream_chunk(rid: str, model: str, chat: bool, text: str | None, steps: list[dict],
                 finish_reason: str | None = None, first: bool = False) -> dict:
    if chat:
        delta: dict = {"role": "assistant", "content": ""} if first else {}
        if text:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [choice],
            "lookahead": {"steps": steps}}
