"""The request as the orchestrator takes it: one typed spec from the edge to the core.

`RequestSpec.from_openai` builds it from a validated OpenAI HTTP body; `RequestSpec.from_grpc`
turns a lookahead.v1 message into that same body first (the proto's fields carry the OpenAI
names) and validates it with the same models, so both protocols accept, refuse and map every
option alike. The orchestrator deployment and the in-process pipeline read only this.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from deployments.api.errors import HTTPError
from deployments.api.openai_api import ChatCompletionRequest, CompletionRequest, LookaheadRequestOptions
from orchestrator.types import Prompt


@dataclass(frozen=True)
class RequestOptions:
    """Every per-request option a client may set. None (or empty) takes the server's default
    (`AppConfig.defaults`, `AppConfig.verifier.kind`); seed None means fresh randomness."""

    # the `lookahead` object (HTTP) / LookaheadOptions (gRPC)
    mode: str | None = None
    schedule: str | None = None
    verifier: str | None = None
    width: int | None = None  # W, sibling drafts per position
    depth: int | str | None = None  # g, or "auto"
    max_step_tokens: int | None = None
    rejected_drafts: bool = False  # a response option: rejected drafts' text in the steps
    # how each token is chosen, in vLLM's order: the distribution, the bias, the penalties
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (target token id, bias), sorted by id
    repetition_penalty: float | None = None
    min_p: float | None = None
    seed: int | None = None  # in the engines' range (engine_seed)
    max_tokens: int | None = None
    # when the answer ends (vLLM's extras; SamplingParams says how each acts)
    min_tokens: int | None = None
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()  # target-vocabulary ids, sorted
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True


#: the seeds engines take (torch and vLLM: non-negative, and the session derives 31-bit seeds)
SEED_RANGE = 2**31


def engine_seed(seed: int | None) -> int | None:
    """A client's int64 seed in the engines' range, deterministically; seeds already in range
    stay as they are."""
    return None if seed is None else seed % SEED_RANGE


@dataclass(frozen=True)
class RequestSpec:
    request_id: str
    prompt: Prompt
    stop: tuple[str, ...] = ()
    timeout_s: float | None = None  # the client's deadline; None: the server's request_timeout_s
    options: RequestOptions = field(default_factory=RequestOptions)

    @classmethod
    def from_openai(cls, body: ChatCompletionRequest | CompletionRequest, request_id: str,
                    timeout_s: float | None = None) -> "RequestSpec":
        la = body.lookahead or LookaheadRequestOptions()
        options = RequestOptions(
            **{name: getattr(la, name) for name in LookaheadRequestOptions.model_fields},
            max_tokens=body.max_completion_tokens or body.max_tokens, temperature=body.temperature,
            top_p=body.top_p, top_k=0 if body.top_k == -1 else body.top_k,  # vLLM's -1: no top-k
            seed=engine_seed(body.seed), repetition_penalty=body.repetition_penalty, min_p=body.min_p,
            logit_bias=tuple(sorted((int(t), float(b)) for t, b in (body.logit_bias or {}).items())),
            min_tokens=body.min_tokens or None, ignore_eos=body.ignore_eos,
            stop_token_ids=tuple(body.stop_token_ids or ()), include_stop_str_in_output=body.include_stop_str_in_output,
            skip_special_tokens=body.skip_special_tokens)
        if isinstance(body, ChatCompletionRequest):
            go_on = body.continue_final_message
            prompt = Prompt(messages=[m.as_dict() for m in body.messages],
                            chat_template_kwargs=body.chat_template_kwargs,
                            add_generation_prompt=not go_on if body.add_generation_prompt is None
                            else body.add_generation_prompt,
                            continue_final_message=go_on)
        else:
            prompt = Prompt(text=body.prompt)
        return cls(request_id, prompt, tuple(body.stop or ()), timeout_s, options)

    @classmethod
    def from_grpc(cls, request, request_id: str, timeout_s: float | None = None) -> "RequestSpec":
        """The spec of a lookahead.v1 GenerateRequest; raises HTTPError (400) as HTTP would."""
        body = openai_body(request)
        try:
            parsed = (ChatCompletionRequest if "messages" in body else CompletionRequest).model_validate(body)
        except ValueError as exc:
            raise HTTPError(400, first_error(exc), param=first_param(exc)) from None
        return cls.from_openai(parsed, request_id, timeout_s)


def openai_body(request) -> dict:
    """A GenerateRequest as the OpenAI body it stands for: every set field under its own name
    (shortest float text, as a JSON client would send it), messages or prompt, never both."""
    from google.protobuf import json_format

    body = json_format.MessageToDict(request, preserving_proto_field_name=True)
    body.setdefault("model", "")
    messages = body.get("messages") or []
    if bool(messages) == bool(request.prompt) or not (request.prompt or any(m.get("content", "").strip()
                                                                           for m in messages)):
        raise HTTPError(400, "messages/prompt: give exactly one, non-empty", param="messages")
    if "chat_template_kwargs" in body and not messages:
        raise HTTPError(400, "chat_template_kwargs: only with messages (a raw prompt has no chat template)",
                        param="chat_template_kwargs")
    return body


def first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        e = errors()[0]
        return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
    return str(exc)


def first_param(exc: ValueError) -> str | None:
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        return ".".join(str(p) for p in errors()[0]["loc"]) or None
    return None
