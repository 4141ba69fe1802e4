"""The OpenAI-compatible HTTP surface, built per Ingress replica (late-bound FastAPI app).

Building the app inside the replica (rather than decorating a module-level app) lets the
routes and the auth/size middleware close over the replica's own state: its API keys,
limits and orchestrator handle.
"""
from __future__ import annotations

import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.api import openai_api as oa
from deployments.api.admission import Admission
from deployments.api.errors import HTTPError, internal_error_body, new_error_id, retry_headers

# The replica's logger: under Ray Serve these lines land in the Ingress replica's log.
log = logging.getLogger("ray.serve")

OPEN_PATHS = ("/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
#: the routes that generate, each counted against the replica's admission limit
GENERATE_PATHS = ("/v1/chat/completions", "/v1/completions")
#: where the ingress notes when a request reached it: its deadline counts from there
START = "lookahead.start"


class GuardMiddleware:
    """API keys, the body size limit and admission, checked before any body is parsed (pure
    ASGI): a generation request holds its place from here until its response (a stream's last
    event) is sent, so a client that sends its body slowly holds one too, as in Serve's count."""

    def __init__(self, app, keys, max_body: int, admission: Admission | None = None) -> None:
        self.app, self.keys, self.max_body = app, keys, max_body
        self.admission = admission or Admission(None)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        scope[START] = time.monotonic()
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

        if scope["path"] not in GENERATE_PATHS or scope.get("method") != "POST":
            return await self.app(scope, counted, send)
        try:
            self.admission.enter()
        except HTTPError as full:
            return await _reply(send, full.status, full.body, full.headers)
        try:
            return await self.app(scope, counted, send)
        finally:
            self.admission.leave()


def _too_large(limit: int) -> dict:
    return oa.error_body(f"request body exceeds {limit} bytes", code="body_too_large")


async def _reply(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    raw = json.dumps(body).encode()
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": raw})


class ErrorMiddleware:
    """The outermost layer: an exception nobody handled becomes an OpenAI 500 body, logged here
    with an error id the client also gets; the client never sees a traceback."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if getattr(exc, "lookahead_logged", False) and started:
                return  # FastAPI already answered with server_error_body and re-raised
            if isinstance(exc, HTTPError):  # a client error raised outside FastAPI's handlers
                if not started:
                    await _reply(send, exc.status, exc.body)
                return
            body = server_error_body(exc, scope)
            if not started:
                await _reply(send, 500, body)


def server_error_body(exc: BaseException, scope) -> dict:
    """Log an unexpected exception with a fresh error id; the body names only the id."""
    error_id = new_error_id()
    log.error("unhandled error %s on %s %s", error_id, scope.get("method"), scope.get("path"), exc_info=exc)
    try:
        exc.lookahead_logged = True  # type: ignore[attr-defined]
    except AttributeError:
        pass
    return internal_error_body(error_id)


STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error",
                503: "overloaded_error", 504: "timeout_error"}


def add_error_handlers(app: FastAPI) -> None:
    """Every error FastAPI or Starlette would answer on its own gets an OpenAI error body."""

    @app.exception_handler(HTTPError)
    async def _http_error(_req: Request, exc: HTTPError):
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_req: Request, exc: RequestValidationError):
        errors = exc.errors()
        err = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            return JSONResponse(oa.error_body(f"request body is not valid JSON: {detail}".rstrip(": "),
                                              code="invalid_json"), status_code=400)
        locs = [[str(p) for p in e.get("loc", ()) if p != "body"] for e in errors] or [[]]
        loc, same = locs[0], [i for i, x in enumerate(locs) if x[:1] == locs[0][:1]]
        if len(same) > 1 and err.get("type") != "extra_forbidden":  # one field, several union branches (each adds its name): name the field
            loc = [parts[0] for parts in zip(*(locs[i] for i in same)) if len(set(parts)) == 1]
        param = ".".join(loc) or None
        if err.get("type") == "extra_forbidden":
            msg = f"Unrecognized request argument supplied: {param}"
        elif param is None and err.get("type") in ("model_attributes_type", "model_type", "dict_type"):
            msg = "request body must be a JSON object (Content-Type: application/json)"
        else:
            detail = " or ".join(dict.fromkeys(str(errors[i].get("msg")) for i in same)) if errors else err["msg"]
            msg = f"{param}: {detail}" if param else detail
        return JSONResponse(oa.error_body(msg, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(req: Request, exc: StarletteHTTPException):
        cause = exc.__cause__
        if isinstance(cause, HTTPError):  # raised while FastAPI read the body (size limit)
            return JSONResponse(cause.body, status_code=cause.status, headers=cause.headers)
        status, code, param = exc.status_code, None, None
        if status == 404:
            msg, code = f"Invalid URL ({req.method} {req.url.path})", "unknown_url"
        elif status == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            msg, code = f"Method {req.method} is not allowed on {req.url.path} (allowed: {allowed})", "method_not_allowed"
        elif isinstance(cause, UnicodeDecodeError):
            msg, code = "request body is not valid UTF-8", "invalid_json"
        elif status == 400 and cause is not None:
            msg, code = f"request body could not be parsed: {type(cause).__name__}", "invalid_json"
        else:
            msg = str(exc.detail)
        type_ = STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return JSONResponse(oa.error_body(msg, type_, param, code), status_code=status,
                            headers={**(exc.headers or {}), **retry_headers(status)})

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception):
        return JSONResponse(server_error_body(exc, req.scope), status_code=500)


def build_http_app(ingress) -> FastAPI:
    """Routes delegate to the Ingress replica, which owns the logic shared with gRPC."""
    app = FastAPI(title="lookahead", version="0.1.0",
                  description="OpenAI-compatible API with step-level speculative decoding (Lookahead Reasoning)")
    add_error_handlers(app)

    @app.get("/health")
    async def health():
        # 200 once the target can serve (load balancers and KubeRay probes read this), else 503
        ready, roles = await ingress.health()
        if ready:
            return {"status": "ok", "roles": roles}
        body = oa.error_body("the target model is not ready", "service_unavailable", code="not_ready")
        return JSONResponse({**body, "roles": roles}, status_code=503, headers=retry_headers(503))

    @app.get("/v1/models")
    async def models():
        return ingress.models()

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        return ingress.model(model_id)

    @app.get("/v1/lookahead/stats")
    async def stats():
        return await ingress.stats()

    # x-request-timeout: the application's own deadline; x-request-timeout-seconds: the one Serve's
    # HTTP proxy keeps for the request (the deadline ends before it, so the answer is ours)
    @app.post("/v1/chat/completions")
    async def chat(body: oa.ChatCompletionRequest, request: Request):
        return await ingress.http_generate(body, request.headers.get("x-request-timeout"), True,
                                           request.headers.get("x-request-timeout-seconds"), request.scope.get(START))

    @app.post("/v1/completions")
    async def completions(body: oa.CompletionRequest, request: Request):
        return await ingress.http_generate(body, request.headers.get("x-request-timeout"), False,
                                           request.headers.get("x-request-timeout-seconds"), request.scope.get(START))

    return ErrorMiddleware(GuardMiddleware(app, ingress.keys, ingress.cfg.server.max_body_bytes, ingress.admission))
