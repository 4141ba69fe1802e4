"""The OpenAI-compatible HTTP surface, built per Ingress replica (late-bound FastAPI app).

Building the app inside the replica (rather than decorating a module-level app) lets the
routes and the auth/size middleware close over the replica's own state: its API keys,
limits and orchestrator handle.
"""
from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from deployments.api import openai_api as oa
from deployments.api.errors import HTTPError

OPEN_PATHS = ("/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


class GuardMiddleware:
    """API keys and the body size limit, checked before any body is parsed (pure ASGI)."""

    def __init__(self, app, keys, max_body: int) -> None:
        self.app, self.keys, self.max_body = app, keys, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not self.keys.allows_http(headers.get("authorization")):
            return await _reply(send, 401, oa.error_body("Invalid or missing API key (Authorization: Bearer <key>)",
                                                         "authentication_error", None, "invalid_api_key"))
        size = headers.get("content-length", "")
        if size.isdigit() and int(size) > self.max_body:
            return await _reply(send, 413, _too_large(self.max_body))
        seen = 0

        async def counted():  # chunked bodies carry no length: count as they arrive
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise HTTPError(413, _too_large(self.max_body)["error"]["message"], code="body_too_large")
            return message

        return await self.app(scope, counted, send)


def _too_large(limit: int) -> dict:
    return oa.error_body(f"request body exceeds {limit} bytes", code="body_too_large")


async def _reply(send, status: int, body: dict) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


def build_http_app(ingress) -> FastAPI:
    """Routes delegate to the Ingress replica, which owns the logic shared with gRPC."""
    app = FastAPI(title="lookahead", version="0.1.0",
                  description="OpenAI-compatible API with step-level speculative decoding (Lookahead Reasoning)")

    @app.exception_handler(HTTPError)
    async def _http_error(_req: Request, exc: HTTPError):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_req: Request, exc: RequestValidationError):
        errors = exc.errors()
        err = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        msg = f"{param}: {err.get('msg')}" if param else str(err.get("msg"))
        code = "invalid_json" if err.get("type") in ("json_invalid", "value_error.jsondecode") else None
        return JSONResponse(oa.error_body(msg, param=param, code=code), status_code=400)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return ingress.models()

    @app.get("/v1/lookahead/stats")
    async def stats():
        return await ingress.orch.stats.remote()

    @app.post("/v1/chat/completions")
    async def chat(body: oa.ChatCompletionRequest, request: Request):
        return await ingress.http_generate(body, request.headers.get("x-request-timeout"), chat=True)

    @app.post("/v1/completions")
    async def completions(body: oa.CompletionRequest, request: Request):
        return await ingress.http_generate(body, request.headers.get("x-request-timeout"), chat=False)

    return GuardMiddleware(app, ingress.keys, ingress.cfg.server.max_body_bytes)
