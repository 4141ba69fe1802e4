"""OpenAI-compatible request models, response bodies and error bodies (no Ray, no I/O).

Every parameter of OpenAI's chat and completions requests is declared here and falls in one
of three groups, so none is ever silently dropped (unknown fields are refused too):
- honoured: sampling (temperature, top_p, seed, and vLLM's top_k, min_p, repetition_penalty,
  plus logit_bias), max tokens, stop, streaming and its usage chunk, echo,
  chat_template_kwargs, the `lookahead` options, and vLLM's extras on the answer's end
  (ignore_eos, min_tokens, stop_token_ids, include_stop_str_in_output, skip_special_tokens) and on
  the prompt's (add_generation_prompt, continue_final_message);
- accepted metadata that cannot change the output (IGNORED_METADATA below);
- refused with a 400 naming the parameter unless it holds its neutral value (REFUSED below,
  each with the reason).
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

from deployments.config import Depth, bounded
from orchestrator.modes import ModeName, Schedule
from orchestrator.stop_strings import normalize_stops
from verifier.kinds import VerifierKind

MAX_STOPS = 16
# chat_template_kwargs may not set what the server renders with, nor smuggle in refused features
# (the named parameters of transformers' apply_chat_template): only template variables pass
RESERVED_TEMPLATE_KWARGS = ("messages", "conversation", "add_generation_prompt", "continue_final_message",
                            "tokenize", "chat_template", "return_dict", "return_assistant_tokens_mask",
                            "tools", "documents", "padding", "truncation", "max_length", "return_tensors",
                            "tokenizer_kwargs", "processor_kwargs", "kwargs")

# Accepted and ignored: none of them can change the generated text or its finish reason.
# user / safety_identifier: end-user ids for abuse monitoring; metadata / store: stored-completion
# bookkeeping (this server stores nothing); service_tier: the caller's billing tier;
# prompt_cache_key / prompt_cache_retention / prompt_cache_options: caching hints (engines cache
# prefixes on their own); parallel_tool_calls: only meaningful with tools, which are refused;
# stream_options.include_obfuscation: random padding against length side channels, not added.
IGNORED_METADATA = ("user", "safety_identifier", "metadata", "store", "service_tier", "prompt_cache_key",
                    "prompt_cache_retention", "prompt_cache_options", "parallel_tool_calls")

SPECULATION = "accepted draft steps are the draft model's tokens"


def _none_or(*neutral: Any) -> Callable[[Any], bool]:
    return lambda v: v is None or any(v == n for n in neutral)


LOGPROBS = (f"logprobs are not supported: {SPECULATION}, so they carry no target log-probabilities, "
            "and the engines do not return them")

# name -> (is the value neutral?, why anything else is refused)
REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (_none_or(1), "n > 1 is not supported: one request runs one speculative session; send n requests"),
    "best_of": (_none_or(1), "best_of > 1 is not supported: one request runs one speculative session"),
    # chat: a boolean; completions: a count, where 0 still asks for the sampled token's log-probability
    "logprobs": (lambda v: v is None or v is False, LOGPROBS),
    "top_logprobs": (_none_or(0), f"top_logprobs are not supported: {SPECULATION}, so they carry no target "
                     "log-probabilities"),
    "tools": (_none_or([]), "tool calling is not supported by this server"),
    "tool_choice": (_none_or("none"), "tool calling is not supported by this server (only tool_choice='none')"),
    "functions": (_none_or([]), "function calling is not supported by this server"),
    "function_call": (_none_or("none"), "function calling is not supported by this server "
                      "(only function_call='none')"),
    "response_format": (_none_or({"type": "text"}), "structured output (json_object, json_schema) is not "
                        "supported: draft and target would both need the same constrained decoding"),
    "suffix": (_none_or(""), "suffix (fill-in-the-middle) is not supported"),
    "audio": (_none_or(), "audio output is not supported: this server generates text"),
    "modalities": (_none_or(["text"]), "only the 'text' modality is supported"),
    "prediction": (_none_or(), "predicted outputs are not supported (token-level speculation is configured "
                   "per engine: lookahead.mode 'sd' or 'lr+sd')"),
    "web_search_options": (_none_or(), "web search is not supported"),
    "reasoning_effort": (_none_or(), "reasoning_effort is not supported; for models with a thinking switch "
                         "use chat_template_kwargs (e.g. {'enable_thinking': false})"),
    "verbosity": (_none_or(), "verbosity is not supported"),
    "moderation": (_none_or(), "moderation is not supported by this server"),
    # vLLM counts these over one engine request's output, and every step is its own request: the
    # count would restart at each step boundary. repetition_penalty covers prompt + output, i.e.
    # the whole answer so far, and is honoured.
    "presence_penalty": (_none_or(0), "presence_penalty is not supported: the engines generate each step as "
                         "its own request, so the count would restart at every step; use repetition_penalty"),
    "frequency_penalty": (_none_or(0), "frequency_penalty is not supported: the engines generate each step as "
                          "its own request, so the count would restart at every step; use repetition_penalty"),
}
MAX_LOGIT_BIAS = 300
MAX_STOP_TOKEN_IDS = 64


class LookaheadRequestOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: ModeName | None = None
    depth: Depth | None = None
    width: int | None = bounded("width")
    max_step_tokens: int | None = bounded("max_step_tokens")  # a step is cut after this many tokens
    schedule: Schedule | None = None
    verifier: VerifierKind | None = None
    # steps[].rejected_draft (the draft a verifier refused, unverified text) in the response
    rejected_drafts: bool = False


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")  # image_url, input_audio, file: refused by type below
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None  # passed to the chat template, which decides what it means
    # A previous assistant message sent back as the SDK returned it carries these; empty they
    # mean nothing, and tool or function calls are refused like the tools themselves.
    refusal: str | None = None
    annotations: list | None = None
    tool_calls: list | None = None
    function_call: dict | None = None
    audio: dict | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text or "" for p in self.content)  # as vLLM joins text parts
        return self.content or ""

    def refusal_of(self, i: int) -> tuple[str, str] | None:
        if isinstance(self.content, list):
            for j, part in enumerate(self.content):
                if part.type != "text" or part.text is None:
                    return (f"messages.{i}.content.{j}",
                            f"only text content parts are supported, got type {part.type!r}")
        for name in ("tool_calls", "function_call", "audio"):
            if getattr(self, name):
                return f"messages.{i}.{name}", f"messages with {name} are not supported by this server"
        return None

    def as_dict(self) -> dict:
        d = {"role": self.role, "content": self.text()}
        if self.name:
            d["name"] = self.name
        return d


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    include_obfuscation: bool = False  # accepted, see IGNORED_METADATA


def _refusable(name: str, *params: str) -> type[BaseModel]:
    """A base declaring `params` (each in REFUSED) as fields of any value: declared, so a request
    naming one is refused with its reason (`refusal`), not as an unknown field."""
    assert all(p in REFUSED for p in params), params
    return create_model(name, __config__=ConfigDict(extra="forbid"), **{p: (Any, None) for p in params})


class _Common(_refusable("_CommonRefusable", "n", "logprobs", "presence_penalty", "frequency_penalty")):
    model_config = ConfigDict(extra="forbid")
    model: str
    # the upper limit is the server's (server.max_tokens_limit), checked by the orchestrator
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)  # vLLM: -1 (or 0) is no top-k
    seed: int | None = Field(None, ge=-2**63, le=2**63 - 1)  # any int64 (request.engine_seed maps it)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    lookahead: LookaheadRequestOptions | None = None
    # see REFUSED and IGNORED_METADATA
    repetition_penalty: float | None = Field(None, gt=0, le=10)  # vLLM extra
    min_p: float | None = Field(None, ge=0, le=1)  # vLLM extra
    logit_bias: dict[str, float] | None = None  # token id (target vocabulary) -> bias in [-100, 100]
    # vLLM extras on when the answer ends (orchestrator/types.py SamplingParams says how each acts)
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)  # over the whole answer
    # target-vocabulary ids that end the answer, like EOS
    stop_token_ids: list[int] | None = Field(None, max_length=MAX_STOP_TOKEN_IDS)
    include_stop_str_in_output: bool = False  # the matched stop string (or stop token) stays in the text
    skip_special_tokens: bool = True
    user: str | None = None
    safety_identifier: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = normalize_stops(v)  # ValueError for empty strings
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        return list(stops)

    @field_validator("stop_token_ids")
    @classmethod
    def _stop_token_ids(cls, v):
        if any(t < 0 for t in v or ()):
            raise ValueError("stop token ids must be non-negative token ids")
        return sorted(set(v)) if v else v

    @field_validator("min_tokens")
    @classmethod
    def _min_tokens_fit(cls, v, info: ValidationInfo):
        most = info.data.get("max_completion_tokens") or info.data.get("max_tokens")
        if most is not None and v > most:
            raise ValueError(f"min_tokens ({v}) must be <= max_tokens ({most})")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v):
        if not v:
            return v
        if len(v) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} entries")
        for token, bias in v.items():
            if not token.isdigit():
                raise ValueError(f"keys must be token ids, got {token!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"bias for token {token} must be in [-100, 100], got {bias}")
        return v

    def refusal(self) -> tuple[str, str] | None:
        """(param, reason) for the first parameter this server refuses, or None."""
        for name in type(self).model_fields:  # declaration order: the same answer every time
            if name in self.model_fields_set and name in REFUSED and not REFUSED[name][0](getattr(self, name)):
                return name, REFUSED[name][1]
        if self.stream_options is not None and not self.stream:
            return "stream_options", "stream_options is only allowed when stream is true"
        return None


class ChatCompletionRequest(_Common, _refusable(
        "_ChatRefusable", "top_logprobs", "tools", "tool_choice", "functions", "function_call", "response_format",
        "audio", "modalities", "prediction", "web_search_options", "reasoning_effort", "verbosity", "moderation")):
    messages: list[ChatMessage] = Field(min_length=1)
    chat_template_kwargs: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # vLLM extras: how the template ends the prompt (a new assistant turn, or the last assistant
    # message left open for the model to continue)
    add_generation_prompt: bool | None = None  # None: true, unless continue_final_message
    continue_final_message: bool = False

    @field_validator("continue_final_message")
    @classmethod
    def _continue_final(cls, v, info: ValidationInfo):
        if v and info.data.get("add_generation_prompt"):
            raise ValueError("add_generation_prompt and continue_final_message cannot both be true")
        messages = info.data.get("messages")
        if v and messages and messages[-1].role != "assistant":
            raise ValueError("continue_final_message continues the last message, which must be the assistant's")
        return v

    @field_validator("messages")
    @classmethod
    def _has_content(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.text().strip() for m in v):
            raise ValueError("messages must contain at least one non-empty message")
        return v

    @field_validator("chat_template_kwargs")
    @classmethod
    def _template_kwargs(cls, v):
        reserved = sorted(set(v or ()) & set(RESERVED_TEMPLATE_KWARGS))
        if reserved:
            raise ValueError(f"{reserved} cannot be set through chat_template_kwargs")
        bad = sorted(k for k in v or () if not k.isidentifier())
        if bad:
            raise ValueError(f"keys must be template variable names, got {bad}")
        return v

    def refusal(self) -> tuple[str, str] | None:
        for i, m in enumerate(self.messages):
            found = m.refusal_of(i)
            if found:
                return found
        return super().refusal()


class CompletionRequest(_Common, _refusable("_CompletionRefusable", "best_of", "suffix")):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_text_prompt(cls, v):
        if isinstance(v, list):
            if len(v) != 1 or not isinstance(v[0], str):
                raise ValueError("send one text prompt per request (no batches, no token ids: draft and "
                                 "target models may use different tokenizers)")
            v = v[0]
        if not v:
            raise ValueError("prompt must not be empty")
        return v


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def model_card(name: str, root: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "lookahead", "root": root}


def usage(prompt_tokens: int, stats: dict) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": stats["tokens"],
            "total_tokens": prompt_tokens + stats["tokens"], "lookahead": stats}


def chat_response(rid: str, model: str, result: dict, prompt_tokens: int) -> dict:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                         "finish_reason": result["finish_reason"], "logprobs": None}],
            "usage": usage(prompt_tokens, result["stats"]),
            "lookahead": {"steps": result["steps"]}}


def completion_response(rid: str, model: str, result: dict, prompt_tokens: int, echo: str = "") -> dict:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": echo + result["text"], "finish_reason": result["finish_reason"],
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


def usage_chunk(rid: str, model: str, chat: bool, prompt_tokens: int, stats: dict) -> dict:
    """The last chunk of a stream with stream_options.include_usage: usage, and no choices."""
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [], "usage": usage(prompt_tokens, stats)}
