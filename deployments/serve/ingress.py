"""Ingress: OpenAI-compatible HTTP (FastAPI) and the lookahead.v1 gRPC service, one deployment.

Ray Serve's HTTP proxy routes to the FastAPI app; its gRPC proxy calls the methods named
after the RPCs (Generate, GenerateStream, Health). Both build the same request spec for the
orchestrator, so the two protocols cannot drift apart.
"""
from __future__ import annotations

import asyncio
import json
import logging

import grpc
from fastapi.responses import StreamingResponse
from ray import serve

from deployments.api import grpc_api
from deployments.api import openai_api as oa
from deployments.api.auth import ApiKeys
from deployments.api.errors import HTTPError
from deployments.api.http_app import build_http_app
from deployments.config import AppConfig
from deployments.serve.errors import http_error_of
from deployments.serve.remote import cancel_quietly
from protos.lookahead.v1 import lookahead_pb2 as pb

logger = logging.getLogger("ray.serve")


async def sse_events(gen, rid: str, model: str, chat: bool, prompt_tokens: int, include_usage: bool):
    """OpenAI-style SSE from the orchestrator stream; one event per accepted cycle."""
    # A client that disconnects cancels this generator, which cancels the session.
    try:
        yield _sse(oa.stream_chunk(rid, model, chat, None, [], first=True))
        async for chunk in gen:
            if chunk.get("done"):
                final = oa.stream_chunk(rid, model, chat, None, [], chunk["finish_reason"])
                if include_usage:
                    final["usage"] = oa.usage(prompt_tokens, chunk["stats"])
                yield _sse(final)
            elif chunk.get("steps"):
                text = "".join(s["text"] for s in chunk["steps"])
                yield _sse(oa.stream_chunk(rid, model, chat, text, chunk["steps"]))
        yield "data: [DONE]\n\n"
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a mid-stream failure ends the stream with an error event
        logger.exception("stream %s failed", rid)
        yield _sse(oa.error_body(f"generation failed: {type(exc).__name__}: {exc}"[:500], "server_error"))
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

    # -- HTTP (routes in deployments/api/http_app.py) ----------------------------------------
    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.cfg.server.served_model_name, "object": "model",
                                            "created": 0, "owned_by": "lookahead",
                                            "root": self.cfg.target.engine.model}]}

    async def http_generate(self, body, timeout_header: str | None, chat: bool):
        self._check_model(body.model)
        rid = oa.new_id("chatcmpl" if chat else "cmpl")
        spec = {"overrides": body.overrides(), "request_id": rid, "timeout_s": self._timeout(timeout_header)}
        if chat:
            spec["messages"] = [m.model_dump() for m in body.messages]
        else:
            spec["prompt"] = body.prompt
        if not body.stream:
            result, prompt_tokens = await self._run(spec)
            build = oa.chat_response if chat else oa.completion_response
            return build(rid, body.model, result, prompt_tokens)
        gen, prompt_tokens = await self._open_stream(spec)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = sse_events(gen, rid, body.model, chat, prompt_tokens, include_usage)
        return StreamingResponse(events, media_type="text/event-stream")

    # -- gRPC (method names are the RPC names) ---------------------------------------
    def _grpc_spec(self, request: pb.GenerateRequest, context) -> dict | None:
        metadata = dict(context.invocation_metadata()) if context is not None else {}
        if not self.keys.allows_grpc(metadata):
            grpc_api.grpc_error(context, grpc.StatusCode.UNAUTHENTICATED, "invalid or missing api key (metadata 'authorization')")
            return None
        if request.model and request.model not in self.model_names:
            grpc_api.grpc_error(context, grpc.StatusCode.NOT_FOUND, f"model: '{request.model}' does not exist")
            return None
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if bool(messages) == bool(request.prompt) or not (request.prompt or any(m["content"].strip() for m in messages)):
            grpc_api.grpc_error(context, grpc.StatusCode.INVALID_ARGUMENT, "messages/prompt: give exactly one, non-empty")
            return None
        la = request.lookahead
        overrides = {
            "mode": la.mode or None, "schedule": la.schedule or None,
            "depth": la.depth if la.HasField("depth") else None,
            "width": la.width if la.HasField("width") else None,
            "max_tokens": request.max_tokens if request.HasField("max_tokens") else None,
            "temperature": request.temperature if request.HasField("temperature") else None,
            "top_p": request.top_p if request.HasField("top_p") else None,
            "top_k": request.top_k if request.HasField("top_k") else None,
            "seed": request.seed if request.HasField("seed") else None,
        }
        try:  # the same validation as the HTTP API, field names included
            opts = oa.LookaheadRequestOptions(**{k: overrides[k] for k in ("mode", "schedule", "depth", "width")})
            oa.CompletionRequest(model="x", prompt="x", max_tokens=overrides["max_tokens"],
                                 temperature=overrides["temperature"], top_p=overrides["top_p"],
                                 top_k=overrides["top_k"], seed=overrides["seed"], lookahead=opts)
        except ValueError as exc:
            grpc_api.grpc_error(context, grpc.StatusCode.INVALID_ARGUMENT, grpc_api.first_error(exc))
            return None
        try:  # the same deadline rule as the HTTP header
            timeout = self._timeout(metadata.get("x-request-timeout"))
        except HTTPError as exc:
            grpc_api.grpc_fail(context, exc)
            return None
        return {"messages": messages or None, "prompt": request.prompt or None, "overrides": overrides,
                "request_id": oa.new_id("grpc"), "timeout_s": timeout}

    async def _grpc_open(self, request, context):
        spec = self._grpc_spec(request, context)
        if spec is None:
            return None, None
        try:
            gen, _ = await self._open_stream(spec)
        except HTTPError as exc:
            grpc_api.grpc_fail(context, exc)
            return None, None
        return spec, gen

    async def Generate(self, request: pb.GenerateRequest, grpc_context=None) -> pb.GenerateResponse:
        spec = self._grpc_spec(request, grpc_context)
        if spec is None:
            return pb.GenerateResponse()
        try:
            result, _ = await self._run(spec)
        except HTTPError as exc:
            grpc_api.grpc_fail(grpc_context, exc)
            return pb.GenerateResponse()
        return pb.GenerateResponse(id=spec["request_id"], text=result["text"], steps=grpc_api.pb_steps(result["steps"]),
                                   finish_reason=result["finish_reason"], stats=grpc_api.pb_stats(result["stats"]))

    async def GenerateStream(self, request: pb.GenerateRequest, grpc_context=None):
        spec, gen = await self._grpc_open(request, grpc_context)
        if gen is None:
            return
        try:
            async for chunk in gen:
                if chunk.get("done"):
                    yield pb.GenerateChunk(id=spec["request_id"], done=True, finish_reason=chunk["finish_reason"],
                                           stats=grpc_api.pb_stats(chunk["stats"]))
                elif chunk.get("steps"):
                    yield pb.GenerateChunk(id=spec["request_id"], steps=grpc_api.pb_steps(chunk["steps"]))
        except Exception as exc:  # noqa: BLE001
            err = http_error_of(exc)
            if err is None:
                raise
            grpc_api.grpc_fail(grpc_context, err)
        finally:
            cancel_quietly(gen)

    async def Health(self, request: pb.HealthRequest, grpc_context=None) -> pb.HealthResponse:
        return pb.HealthResponse(status="SERVING")
