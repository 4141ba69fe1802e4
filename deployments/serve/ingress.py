"""Ingress: OpenAI-compatible HTTP (FastAPI) and the lookahead.v1 gRPC service, one deployment.

Ray Serve's HTTP proxy routes to the FastAPI app; its gRPC proxy calls the methods named
after the RPCs (Generate, GenerateStream, Health). Both build the same request spec for the
orchestrator, so the two protocols cannot drift apart.
"""
from __future__ import annotations

import asyncio
import json
import logging

from fastapi.responses import StreamingResponse
from google.protobuf import json_format
from ray import serve

from deployments.api import grpc_api
from deployments.api import openai_api as oa
from deployments.api.auth import ApiKeys
from deployments.api.errors import HTTPError, internal_error, internal_error_body, new_error_id
from deployments.api.http_app import build_http_app
from deployments.config import AppConfig
from deployments.serve.errors import http_error_of
from deployments.serve.remote import cancel_quietly, response_result
from deployments.serve.request_ids import response_id
from protos.lookahead.v1 import lookahead_pb2 as pb

logger = logging.getLogger("ray.serve")


async def sse_events(gen, rid: str, model: str, chat: bool, prompt_tokens: int, include_usage: bool,
                     echo: str = ""):
    """OpenAI-style SSE from the orchestrator stream; one event per accepted cycle.

    With include_usage, OpenAI's shape: the finish chunk, then one chunk with the usage and an
    empty `choices` list, then [DONE].
    """
    # A client that disconnects cancels this generator, which cancels the session.
    try:
        yield _sse(oa.stream_chunk(rid, model, chat, echo or None, [], first=True))
        async for chunk in gen:
            if chunk.get("done"):
                yield _sse(oa.stream_chunk(rid, model, chat, None, [], chunk["finish_reason"]))
                if include_usage:
                    yield _sse(oa.usage_chunk(rid, model, chat, prompt_tokens, chunk["stats"]))
            elif chunk.get("steps"):
                text = "".join(s["text"] for s in chunk["steps"])
                yield _sse(oa.stream_chunk(rid, model, chat, text, chunk["steps"]))
        yield "data: [DONE]\n\n"
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a mid-stream failure ends the stream with an error event
        err = http_error_of(exc)
        if err is not None:
            yield _sse(err.body)
        else:
            error_id = new_error_id()
            logger.exception("stream %s failed (error id %s)", rid, error_id)
            yield _sse(internal_error_body(error_id))
    finally:
        cancel_quietly(gen)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


@serve.deployment(max_ongoing_requests=128)
@serve.ingress()
class Ingress:
    def __init__(self, config: dict, orchestrator) -> None:
        self.cfg = AppConfig(**config)
        self.orch = orchestrator
        self.model_names = {self.cfg.server.served_model_name, self.cfg.target.engine.model}
        self.keys = ApiKeys.load(self.cfg.server.api_keys_env, self.cfg.server.api_keys_file)

    def __serve_build_asgi_app__(self):
        """Serve calls this at replica start: the HTTP app closes over this replica's state."""
        return build_http_app(self)

    # -- shared ---------------------------------------------------------------------
    def _check_model(self, model: str) -> None:
        if model and model not in self.model_names:
            raise HTTPError(404, f"The model '{model}' does not exist; this server serves "
                                 f"'{self.cfg.server.served_model_name}'", param="model", code="model_not_found")

    async def _open_stream(self, spec: dict):
        """Start the orchestrator stream and take its first chunk, so bad requests fail before any SSE."""
        gen = None
        try:
            gen = self.orch.options(stream=True).generate_stream.remote(spec)
            first = await gen.__anext__()
        except Exception as exc:  # noqa: BLE001
            if gen is not None:
                cancel_quietly(gen)
            err = http_error_of(exc)
            if err is not None:
                raise err from None
            raise
        return gen, first["prompt_tokens"]

    async def _run(self, spec: dict) -> tuple[dict, int]:
        gen, prompt_tokens = await self._open_stream(spec)
        result: dict = {}
        try:
            async for chunk in gen:
                result.update(chunk)
        except Exception as exc:  # noqa: BLE001
            err = http_error_of(exc)
            if err is not None:
                raise err from None
            raise
        finally:
            cancel_quietly(gen)
        return result, prompt_tokens

    def _timeout(self, value: str | None) -> float | None:
        if value is None:
            return None
        try:
            timeout = float(value)
        except ValueError:
            raise HTTPError(400, "x-request-timeout must be a number of seconds", param="x-request-timeout") from None
        if not 0 < timeout <= self.cfg.server.request_timeout_s:
            raise HTTPError(400, f"x-request-timeout must be in (0, {self.cfg.server.request_timeout_s:g}]",
                            param="x-request-timeout")
        return timeout

    # -- shared health -------------------------------------------------------------------
    async def health(self) -> tuple[bool, dict]:
        """(serving?, per-role readiness). Serving needs a ready target; a draft or judge that is not
        ready only means requests run target-only until it is back."""
        try:
            roles = await asyncio.wait_for(response_result(self.orch.health.remote()), 15)
        except Exception as exc:  # noqa: BLE001 - no orchestrator: nothing is ready
            return False, {"orchestrator": {"ready": False, "error": f"{type(exc).__name__}: {exc}"[:300]}}
        return bool(roles.get("target", {}).get("ready")), roles

    # -- HTTP (routes in deployments/api/http_app.py) ----------------------------------------
    def models(self) -> dict:
        return {"object": "list", "data": [oa.model_card(self.cfg.server.served_model_name,
                                                         self.cfg.target.engine.model)]}

    def model(self, model_id: str) -> dict:
        self._check_model(model_id or "?")
        return oa.model_card(model_id, self.cfg.target.engine.model)

    async def http_generate(self, body, timeout_header: str | None, chat: bool):
        self._check_model(body.model)
        refused = body.refusal()
        if refused:
            param, reason = refused
            raise HTTPError(400, f"{param}: {reason}", param=param, code="unsupported_parameter")
        rid = response_id("chatcmpl" if chat else "cmpl")  # embeds Serve's request id: one id in every log
        spec = {"overrides": body.overrides(), "request_id": rid, "timeout_s": self._timeout(timeout_header),
                "stop": body.stop}
        echo = ""
        if chat:
            spec["messages"] = [m.as_dict() for m in body.messages]
            spec["chat_template_kwargs"] = body.chat_template_kwargs
        else:
            spec["prompt"] = body.prompt
            echo = body.prompt if body.echo else ""
        if not body.stream:
            result, prompt_tokens = await self._run(spec)
            if chat:
                return oa.chat_response(rid, body.model, result, prompt_tokens)
            return oa.completion_response(rid, body.model, result, prompt_tokens, echo)
        gen, prompt_tokens = await self._open_stream(spec)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = sse_events(gen, rid, body.model, chat, prompt_tokens, include_usage, echo)
        return StreamingResponse(events, media_type="text/event-stream")

    # -- gRPC (method names are the RPC names) ---------------------------------------
    def _grpc_spec(self, request: pb.GenerateRequest, context) -> dict:
        """The orchestrator spec for a gRPC request, validated like HTTP's; raises HTTPError."""
        metadata = dict(context.invocation_metadata()) if context is not None else {}
        if not self.keys.allows_grpc(metadata):
            raise HTTPError(401, "invalid or missing api key (metadata 'authorization')", "authentication_error")
        self._check_model(request.model)
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if bool(messages) == bool(request.prompt) or not (request.prompt or any(m["content"].strip() for m in messages)):
            raise HTTPError(400, "messages/prompt: give exactly one, non-empty", param="messages")
        kwargs = json_format.MessageToDict(request.chat_template_kwargs) if request.HasField("chat_template_kwargs") else None
        if kwargs is not None and not messages:
            raise HTTPError(400, "chat_template_kwargs: only with messages (a raw prompt has no chat template)",
                            param="chat_template_kwargs")
        la = request.lookahead
        overrides = {
            "mode": la.mode or None, "schedule": la.schedule or None,
            "depth": la.depth if la.HasField("depth") else None,
            "width": la.width if la.HasField("width") else None,
            "rejected_drafts": la.rejected_drafts,
            "max_tokens": request.max_tokens if request.HasField("max_tokens") else None,
            "temperature": request.temperature if request.HasField("temperature") else None,
            "top_p": request.top_p if request.HasField("top_p") else None,
            "top_k": request.top_k if request.HasField("top_k") else None,
            "seed": request.seed if request.HasField("seed") else None,
            "repetition_penalty": request.repetition_penalty if request.HasField("repetition_penalty") else None,
            "min_p": request.min_p if request.HasField("min_p") else None,
        }
        try:  # the same validation as the HTTP API, field names included
            opts = oa.LookaheadRequestOptions(**{k: overrides[k] for k in ("mode", "schedule", "depth", "width")})
            checked = oa.CompletionRequest(model="x", prompt="x", max_tokens=overrides["max_tokens"],
                                           temperature=overrides["temperature"], top_p=overrides["top_p"],
                                           top_k=overrides["top_k"], seed=overrides["seed"], lookahead=opts,
                                           stop=list(request.stop) or None,
                                           repetition_penalty=overrides["repetition_penalty"],
                                           min_p=overrides["min_p"],
                                           logit_bias={str(k): v for k, v in request.logit_bias.items()} or None)
        except ValueError as exc:
            raise HTTPError(400, grpc_api.first_error(exc), param=grpc_api.first_param(exc)) from None
        overrides["logit_bias"] = checked.overrides()["logit_bias"]
        return {"messages": messages or None, "prompt": request.prompt or None, "overrides": overrides,
                "stop": checked.stop, "chat_template_kwargs": kwargs,
                "request_id": response_id("grpc"), "timeout_s": self._timeout(metadata.get("x-request-timeout"))}

    def _grpc_status(self, context, exc: Exception, rpc: str) -> None:
        """Every failure becomes a status: client errors as HTTP would map them, anything else
        INTERNAL with an error id (the traceback stays in this replica's log)."""
        err = exc if isinstance(exc, HTTPError) else http_error_of(exc)
        if err is None:
            error_id = new_error_id()
            logger.exception("gRPC %s failed (error id %s)", rpc, error_id)
            err = internal_error(error_id)
        grpc_api.grpc_fail(context, err)

    async def Generate(self, request: pb.GenerateRequest, grpc_context=None) -> pb.GenerateResponse:
        try:
            spec = self._grpc_spec(request, grpc_context)
            result, _ = await self._run(spec)
        except Exception as exc:  # noqa: BLE001 - mapped to a status code
            self._grpc_status(grpc_context, exc, "Generate")
            return pb.GenerateResponse()
        return pb.GenerateResponse(id=spec["request_id"], text=result["text"], steps=grpc_api.pb_steps(result["steps"]),
                                   finish_reason=result["finish_reason"], stats=grpc_api.pb_stats(result["stats"]))

    async def GenerateStream(self, request: pb.GenerateRequest, grpc_context=None):
        gen = None
        try:
            spec = self._grpc_spec(request, grpc_context)
            gen, _ = await self._open_stream(spec)
            async for chunk in gen:
                if chunk.get("done"):
                    yield pb.GenerateChunk(id=spec["request_id"], done=True, finish_reason=chunk["finish_reason"],
                                           stats=grpc_api.pb_stats(chunk["stats"]))
                elif chunk.get("steps"):
                    yield pb.GenerateChunk(id=spec["request_id"], steps=grpc_api.pb_steps(chunk["steps"]))
        except Exception as exc:  # noqa: BLE001 - mapped to a status code
            self._grpc_status(grpc_context, exc, "GenerateStream")
        finally:
            if gen is not None:
                cancel_quietly(gen)

    async def Health(self, request: pb.HealthRequest, grpc_context=None) -> pb.HealthResponse:
        ready, roles = await self.health()
        return pb.HealthResponse(status="SERVING" if ready else "NOT_SERVING", detail=json.dumps(roles))
