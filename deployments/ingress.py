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
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from deployments import openai_api as oa
from deployments.auth import ApiKeys
from deployments.config import AppConfig
from deployments.orchestrator_deployment import BadRequest
from protos.lookahead.v1 import lookahead_pb2 as pb

logger = logging.getLogger("ray.serve")

app = FastAPI(title="lookahead", version="0.1.0",
              description="OpenAI-compatible API with step-level speculative decoding (Lookahead Reasoning)")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, oa.error_body(message, type_, param, code)


@app.exception_handler(HTTPError)
async def _http_error(_req: Request, exc: HTTPError):
    return JSONResponse(exc.body, status_code=exc.status)


@app.exception_handler(RequestValidationError)
async def _validation_error(_req: Request, exc: RequestValidationError):
    err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    msg = f"{param}: {err.get('msg')}" if param else str(err.get("msg"))
    code = "invalid_json" if err.get("type") == "json_invalid" else None
    return JSONResponse(oa.error_body(msg, param=param, code=code), status_code=400)


def bad_request_of(exc: BaseException) -> BadRequest | None:
    """Ray wraps a replica's exception; find our BadRequest inside it."""
    cause = getattr(exc, "cause", None)
    for e in (exc, cause):
        if isinstance(e, BadRequest):
            return e
    return None


# Helpers sit above the class: @serve.ingress pickles the FastAPI app (and the functions its
# routes reach) when the class is decorated, so names defined after it would be missing.
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
        gen.cancel()


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _grpc_error(context, code, message: str) -> None:
    if context is not None:
        context.set_code(code)
        context.set_details(message)


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        e = errors()[0]
        return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
    return str(exc)


def _pb_steps(steps: list[dict]) -> list[pb.Step]:
    return [pb.Step(text=s["text"], source=s["source"], tokens=s.get("tokens", 0)) for s in steps]


def _pb_stats(st: dict) -> pb.Stats:
    return pb.Stats(mode=st["mode"], cycles=st["cycles"], drafted_steps=st["drafted_steps"],
                    accepted_steps=st["accepted_steps"], target_steps=st["target_steps"], tokens=st["tokens"],
                    acceptance_rate=st["acceptance_rate"], acceptance_by_depth=st["acceptance_by_depth"],
                    wall_s=st["wall_s"], draft_s=st["draft_s"], target_s=st["target_s"], verify_s=st["verify_s"],
                    degraded=st["degraded"])


@serve.deployment(max_ongoing_requests=128)
@serve.ingress(app)
class Ingress:
    def __init__(self, config: dict, orchestrator) -> None:
        self.cfg = AppConfig(**config)
        self.orch = orchestrator
        self.model_names = {self.cfg.server.served_model_name, self.cfg.target.engine.model}
        self.keys = ApiKeys.load(self.cfg.server.api_keys_env, self.cfg.server.api_keys_file)

    # -- shared ---------------------------------------------------------------------
    def _check_model(self, model: str) -> None:
        if model and model not in self.model_names:
            raise HTTPError(404, f"The model '{model}' does not exist; this server serves "
                                 f"'{self.cfg.server.served_model_name}'", param="model", code="model_not_found")

    def _check_http(self, request: Request) -> None:
        if not self.keys.allows_http(request.headers.get("authorization")):
            raise HTTPError(401, "Invalid or missing API key (Authorization: Bearer <key>)",
                            type_="authentication_error", code="invalid_api_key")
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > self.cfg.server.max_body_bytes:
            raise HTTPError(413, f"request body of {size} bytes exceeds {self.cfg.server.max_body_bytes}",
                            code="body_too_large")

    async def _open_stream(self, spec: dict):
        """Start the orchestrator stream and take its first chunk, so bad requests fail before any SSE."""
        gen = self.orch.options(stream=True).generate_stream.remote(spec)
        try:
            first = await gen.__anext__()
        except Exception as exc:  # noqa: BLE001
            gen.cancel()
            bad = bad_request_of(exc)
            if bad is not None:
                raise HTTPError(400, str(bad).split("\n")[-1] if "\n" in str(bad) else str(bad),
                                param=getattr(bad, "param", None)) from None
            raise
        return gen, first["prompt_tokens"]

    async def _run(self, spec: dict) -> tuple[dict, int]:
        gen, prompt_tokens = await self._open_stream(spec)
        result: dict = {}
        try:
            async for chunk in gen:
                result.update(chunk)
        finally:
            gen.cancel()
        return result, prompt_tokens

    # -- HTTP -----------------------------------------------------------------------
    @app.get("/health")
    async def health(self):
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(self, request: Request):
        self._check_http(request)
        return {"object": "list", "data": [{"id": self.cfg.server.served_model_name, "object": "model",
                                            "created": 0, "owned_by": "lookahead",
                                            "root": self.cfg.target.engine.model}]}

    @app.get("/v1/lookahead/stats")
    async def stats(self, request: Request):
        self._check_http(request)
        return await self.orch.stats.remote()

    @app.post("/v1/chat/completions")
    async def chat(self, body: oa.ChatCompletionRequest, request: Request):
        self._check_http(request)
        self._check_model(body.model)
        spec = {"messages": [m.model_dump() for m in body.messages], "overrides": body.overrides(),
                "request_id": oa.new_id("chatcmpl")}
        return await self._respond(spec, body, chat=True)

    @app.post("/v1/completions")
    async def completions(self, body: oa.CompletionRequest, request: Request):
        self._check_http(request)
        self._check_model(body.model)
        spec = {"prompt": body.prompt, "overrides": body.overrides(), "request_id": oa.new_id("cmpl")}
        return await self._respond(spec, body, chat=False)

    async def _respond(self, spec: dict, body, chat: bool):
        rid, model = spec["request_id"], body.model
        if not body.stream:
            result, prompt_tokens = await self._run(spec)
            build = oa.chat_response if chat else oa.completion_response
            return build(rid, model, result, prompt_tokens)
        gen, prompt_tokens = await self._open_stream(spec)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = sse_events(gen, rid, model, chat, prompt_tokens, include_usage)
        return StreamingResponse(events, media_type="text/event-stream")

    # -- gRPC (method names are the RPC names) ---------------------------------------
    def _grpc_spec(self, request: pb.GenerateRequest, context) -> dict | None:
        metadata = dict(context.invocation_metadata()) if context is not None else {}
        if not self.keys.allows_grpc(metadata):
            _grpc_error(context, grpc.StatusCode.UNAUTHENTICATED, "invalid or missing api key (metadata 'authorization')")
            return None
        if request.model and request.model not in self.model_names:
            _grpc_error(context, grpc.StatusCode.NOT_FOUND, f"model: '{request.model}' does not exist")
            return None
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if bool(messages) == bool(request.prompt) or not (request.prompt or any(m["content"].strip() for m in messages)):
            _grpc_error(context, grpc.StatusCode.INVALID_ARGUMENT, "messages/prompt: give exactly one, non-empty")
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
            _grpc_error(context, grpc.StatusCode.INVALID_ARGUMENT, _first_error(exc))
            return None
        return {"messages": messages or None, "prompt": request.prompt or None, "overrides": overrides,
                "request_id": oa.new_id("grpc")}

    async def _grpc_open(self, request, context):
        spec = self._grpc_spec(request, context)
        if spec is None:
            return None, None
        try:
            gen, _ = await self._open_stream(spec)
        except HTTPError as exc:
            _grpc_error(context, grpc.StatusCode.INVALID_ARGUMENT, exc.body["error"]["message"])
            return None, None
        return spec, gen

    async def Generate(self, request: pb.GenerateRequest, grpc_context=None) -> pb.GenerateResponse:
        spec, gen = await self._grpc_open(request, grpc_context)
        if gen is None:
            return pb.GenerateResponse()
        result: dict = {}
        try:
            async for chunk in gen:
                result.update(chunk)
        finally:
            gen.cancel()
        return pb.GenerateResponse(id=spec["request_id"], text=result["text"], steps=_pb_steps(result["steps"]),
                                   finish_reason=result["finish_reason"], stats=_pb_stats(result["stats"]))

    async def GenerateStream(self, request: pb.GenerateRequest, grpc_context=None):
        spec, gen = await self._grpc_open(request, grpc_context)
        if gen is None:
            return
        try:
            async for chunk in gen:
                if chunk.get("done"):
                    yield pb.GenerateChunk(id=spec["request_id"], done=True, finish_reason=chunk["finish_reason"],
                                           stats=_pb_stats(chunk["stats"]))
                elif chunk.get("steps"):
                    yield pb.GenerateChunk(id=spec["request_id"], steps=_pb_steps(chunk["steps"]))
        finally:
            gen.cancel()

    async def Health(self, request: pb.HealthRequest, grpc_context=None) -> pb.HealthResponse:
        return pb.HealthResponse(status="SERVING")
