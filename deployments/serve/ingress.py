"""Ingress: OpenAI-compatible HTTP (FastAPI), the lookahead.v1 gRPC service and the standard
grpc.health.v1 service, one deployment.

Ray Serve's HTTP proxy routes to the FastAPI app; its gRPC proxy calls the methods named
after the RPCs (Generate, GenerateStream, Health; Check and Watch of grpc.health.v1). Both build
the same request spec for the orchestrator, so the two protocols cannot drift apart.
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
from deployments.api.admission import Admission, Deadline, admission_limit, before_proxy
from deployments.api.auth import ApiKeys
from deployments.api.errors import HTTPError, internal_error, internal_error_body, new_error_id
from deployments.api.http_app import build_http_app
from deployments.api.request import RequestSpec
from deployments.config import AppConfig
from deployments.serve.drain import Drain
from deployments.serve.errors import http_error_of, public_reason
from deployments.serve.remote import cancel_quietly, response_result
from deployments.serve.request_ids import response_id
from deployments.serve_config import INGRESS_SERVE_LIMITS
from protos.grpc.health.v1 import health_pb2
from protos.lookahead.v1 import lookahead_pb2 as pb

logger = logging.getLogger("ray.serve")


async def sse_events(gen, rid: str, model: str, chat: bool, prompt_tokens: int, include_usage: bool,
                     echo: str = "", deadline: Deadline | None = None, drain: Drain | None = None):
    """OpenAI-style SSE from the orchestrator stream; one event per accepted cycle.

    With include_usage, OpenAI's shape: the finish chunk, then one chunk with the usage and an
    empty `choices` list, then [DONE]. `drain`: the replica's, which counted this request in
    (counted out here, at the stream's end) and can abort it when the server stops.
    """
    # A client that disconnects cancels this generator, which cancels the session.
    try:
        yield _sse(oa.stream_chunk(rid, model, chat, echo or None, [], first=True))
        stream = gen if drain is None else drain.chunks(gen)
        async for chunk in (stream if deadline is None else deadline.guard(stream)):
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
    except Exception as exc:  # noqa: BLE001 - a mid-stream failure: an error event, then [DONE]
        err = exc if isinstance(exc, HTTPError) else http_error_of(exc)
        if err is not None:
            yield _sse(err.body)
        else:
            error_id = new_error_id()
            logger.exception("stream %s failed (error id %s)", rid, error_id)
            yield _sse(internal_error_body(error_id))
        # as vLLM's server ends a failed stream: clients that read to [DONE] (the openai SDK, vLLM's
        # benchmark) see the error event and stop, instead of waiting on a stream without an end
        yield "data: [DONE]\n\n"
    finally:
        cancel_quietly(gen)
        if drain is not None:
            drain.done()


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


@serve.deployment(**INGRESS_SERVE_LIMITS)
@serve.ingress()
class Ingress:
    """Serve hands this deployment every request (deployments/serve_config.py gives it no Serve
    limit); it counts its own (`admission`) so that a refusal is the application's, never the
    proxy's plain text."""

    def __init__(self, config: dict, orchestrator) -> None:
        self.cfg = AppConfig(**config)
        self.orch = orchestrator
        self.model_names = {self.cfg.server.served_model_name, self.cfg.target.engine.model}
        self.keys = ApiKeys.load(self.cfg.server.api_keys_env, self.cfg.server.api_keys_file)
        self.roles = ["target"] + [role for role in ("draft", "judge") if getattr(self.cfg, role) is not None]
        ingress = self.cfg.server.ingress
        self.admission = Admission(admission_limit(ingress.max_ongoing_requests, ingress.max_queued_requests))
        self.drain = Drain()

    def reconfigure(self, user_config: dict) -> None:
        """The ingress's limits as its entry of the Serve config lists them (`user_config`): they
        apply without a restart, and reach the replica under `serve run` / KubeRay too, where
        the config this replica is built with carries no placement."""
        self.admission.limit = admission_limit(int(user_config["max_ongoing_requests"]),
                                               int(user_config["max_queued_requests"]))

    def __serve_build_asgi_app__(self):
        """Serve calls this at replica start: the HTTP app closes over this replica's state."""
        return build_http_app(self)

    # -- shared ---------------------------------------------------------------------
    def _check_model(self, model: str) -> None:
        if model and model not in self.model_names:
            raise HTTPError(404, f"The model '{model}' does not exist; this server serves "
                                 f"'{self.cfg.server.served_model_name}'", param="model", code="model_not_found")

    async def _open_stream(self, spec: RequestSpec, deadline: Deadline):
        """Start the orchestrator stream and take its first chunk, so bad requests fail before any SSE."""
        gen = None
        try:
            gen = self.orch.options(stream=True).generate_stream.remote(spec)
            first = await deadline.within(self.drain.race(gen.__anext__()))
        except Exception as exc:  # noqa: BLE001
            if gen is not None:
                cancel_quietly(gen)
            err = http_error_of(exc)
            if err is not None:
                raise err from None
            raise
        return gen, first["prompt_tokens"]

    async def _run(self, spec: RequestSpec, deadline: Deadline) -> tuple[dict, int]:
        self.drain.admit()
        try:
            gen, prompt_tokens = await self._open_stream(spec, deadline)
            result: dict = {}
            try:
                async for chunk in deadline.guard(self.drain.chunks(gen)):
                    result.update(chunk)
            except HTTPError:
                raise
            except Exception as exc:  # noqa: BLE001
                err = http_error_of(exc)
                if err is not None:
                    raise err from None
                raise
            finally:
                cancel_quietly(gen)
        finally:
            self.drain.done()
        return result, prompt_tokens

    async def _open_counted(self, spec: RequestSpec, deadline: Deadline):
        """`_open_stream` for a stream counted in flight until its consumer counts it out."""
        self.drain.admit()
        try:
            return await self._open_stream(spec, deadline)
        except BaseException:
            self.drain.done()
            raise

    # -- stopping (deployments/serve/drain.py; called on every replica by deployments/cli/shutdown.py);
    # async: they run on the replica's event loop, where the requests' tasks wait on the abort event --
    async def drain_requests(self) -> int:
        """Refuse new requests (503 / UNAVAILABLE); returns how many are still in flight here."""
        return self.drain.start()

    async def abort_requests(self) -> int:
        """End the requests still in flight with the shutdown error; returns how many there were."""
        return self.drain.abort()

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

    def _deadline(self, own: str | None, proxy: str | None = None, start: float | None = None
                  ) -> tuple[float | None, Deadline]:
        """(the timeout the request asked for or None, its deadline). `own`: the x-request-timeout
        header (metadata on gRPC); `proxy`: Serve's x-request-timeout-seconds, the timeout its HTTP
        proxy keeps for this request (positive: seconds; otherwise none): the deadline ends early
        enough that the application answers first. `start`: when the request reached this replica."""
        asked = self._timeout(own)
        try:
            proxy_s = float(proxy) if proxy is not None else 0.0
        except ValueError:
            proxy_s = 0.0  # Serve ignores a malformed value too
        if proxy_s > 0:
            asked = min(asked or self.cfg.server.request_timeout_s, before_proxy(proxy_s))
        return asked, Deadline(asked or self.cfg.server.request_timeout_s, start)

    @staticmethod
    def _spec_timeout(asked: float | None, deadline: Deadline) -> float | None:
        """What the orchestrator's deadline gets: what is left of the request's (None: the server's)."""
        return None if asked is None else max(deadline.left(), 1e-3)

    # -- shared health -------------------------------------------------------------------
    async def health(self) -> tuple[bool, dict]:
        """(serving?, per-role readiness). Serving needs a ready target; a draft or judge that is not
        ready only means requests run target-only until it is back. A draining replica is not
        serving: load balancers stop sending it requests while it stops."""
        if self.drain.draining:
            return False, {"ingress": {"ready": False, "error": "shutting down"}}
        try:
            roles = await asyncio.wait_for(response_result(self.orch.health.remote()), 15)
        except Exception as exc:  # noqa: BLE001 - no orchestrator: nothing is ready
            logger.warning("orchestrator health failed: %s", exc)  # its text only here: it names actors
            return False, {"orchestrator": {"ready": False, "error": public_reason(exc)}}
        return bool(roles.get("target", {}).get("ready")), roles

    # -- HTTP (routes in deployments/api/http_app.py) ----------------------------------------
    def models(self) -> dict:
        return {"object": "list", "data": [oa.model_card(self.cfg.server.served_model_name,
                                                         self.cfg.target.engine.model)]}

    def model(self, model_id: str) -> dict:
        self._check_model(model_id or "?")
        return oa.model_card(model_id, self.cfg.target.engine.model)

    async def stats(self) -> dict:
        try:
            return await self.orch.stats.remote()
        except Exception as exc:  # noqa: BLE001
            err = http_error_of(exc)
            if err is not None:
                raise err from None
            raise

    async def http_generate(self, body, timeout_header: str | None, chat: bool, proxy_timeout: str | None = None,
                            start: float | None = None):
        self._check_model(body.model)
        refused = body.refusal()
        if refused:
            param, reason = refused
            raise HTTPError(400, f"{param}: {reason}", param=param, code="unsupported_parameter")
        rid = response_id("chatcmpl" if chat else "cmpl")  # embeds Serve's request id: one id in every log
        asked, deadline = self._deadline(timeout_header, proxy_timeout, start)
        spec = RequestSpec.from_openai(body, rid, self._spec_timeout(asked, deadline))
        echo = body.prompt if not chat and body.echo else ""
        if not body.stream:
            result, prompt_tokens = await self._run(spec, deadline)
            if chat:
                return oa.chat_response(rid, body.model, result, prompt_tokens)
            return oa.completion_response(rid, body.model, result, prompt_tokens, echo)
        gen, prompt_tokens = await self._open_counted(spec, deadline)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = sse_events(gen, rid, body.model, chat, prompt_tokens, include_usage, echo, deadline, self.drain)
        return StreamingResponse(events, media_type="text/event-stream")

    # -- gRPC (method names are the RPC names) ---------------------------------------
    def _grpc_spec(self, request: pb.GenerateRequest, context) -> tuple[RequestSpec, Deadline]:
        """The orchestrator spec for a gRPC request, validated like HTTP's, and its deadline;
        raises HTTPError."""
        metadata = dict(context.invocation_metadata()) if context is not None else {}
        if not self.keys.allows_grpc(metadata):
            raise HTTPError(401, "invalid or missing api key (metadata 'authorization')", "authentication_error")
        self._check_model(request.model)
        asked, deadline = self._deadline(metadata.get("x-request-timeout"))
        return RequestSpec.from_grpc(request, response_id("grpc"), self._spec_timeout(asked, deadline)), deadline

    def _grpc_status(self, context, exc: Exception, rpc: str) -> str:
        """Every failure becomes a status: client errors as HTTP would map them, anything else
        INTERNAL with an error id (the traceback stays in this replica's log). Returns its details."""
        err = exc if isinstance(exc, HTTPError) else http_error_of(exc)
        if err is None:
            error_id = new_error_id()
            logger.exception("gRPC %s failed (error id %s)", rpc, error_id)
            err = internal_error(error_id)
        grpc_api.grpc_fail(context, err)
        return err.body["error"]["message"]

    async def Generate(self, request: pb.GenerateRequest, grpc_context=None) -> pb.GenerateResponse:
        try:
            with self.admission.slot():
                spec, deadline = self._grpc_spec(request, grpc_context)
                result, _ = await self._run(spec, deadline)
        except Exception as exc:  # noqa: BLE001 - mapped to a status code
            self._grpc_status(grpc_context, exc, "Generate")
            return pb.GenerateResponse()
        return pb.GenerateResponse(id=spec.request_id, text=result["text"], steps=grpc_api.pb_steps(result["steps"]),
                                   finish_reason=result["finish_reason"], stats=grpc_api.pb_stats(result["stats"]))

    async def GenerateStream(self, request: pb.GenerateRequest, grpc_context=None):
        gen = None
        try:
            with self.admission.slot():  # held while the stream lasts
                spec, deadline = self._grpc_spec(request, grpc_context)
                gen, _ = await self._open_counted(spec, deadline)
                async for chunk in deadline.guard(self.drain.chunks(gen)):
                    if chunk.get("done"):
                        yield pb.GenerateChunk(id=spec.request_id, done=True, finish_reason=chunk["finish_reason"],
                                               stats=grpc_api.pb_stats(chunk["stats"]))
                    elif chunk.get("steps"):
                        yield pb.GenerateChunk(id=spec.request_id, steps=grpc_api.pb_steps(chunk["steps"]))
        except Exception as exc:  # noqa: BLE001 - mapped to a status code
            raise grpc_api.StreamFailed(self._grpc_status(grpc_context, exc, "GenerateStream")) from None
        finally:
            if gen is not None:
                cancel_quietly(gen)
                self.drain.done()

    async def Health(self, request: pb.HealthRequest, grpc_context=None) -> pb.HealthResponse:
        ready, roles = await self.health()
        return pb.HealthResponse(status="SERVING" if ready else "NOT_SERVING", detail=json.dumps(roles))

    # -- grpc.health.v1 (no API key: probes and load balancers carry none) ---------------------
    async def _health_status(self, service: str) -> int | None:
        _, readiness = await self.health()
        return grpc_api.health_status(service, self.roles, readiness)

    async def Check(self, request: health_pb2.HealthCheckRequest, grpc_context=None) -> health_pb2.HealthCheckResponse:
        status = await self._health_status(request.service)
        if status is None:
            grpc_api.grpc_error(grpc_context, grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
            return health_pb2.HealthCheckResponse()
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, grpc_context=None):
        """The current status, once (the standard allows a server to end the stream)."""
        status = await self._health_status(request.service)
        yield health_pb2.HealthCheckResponse(
            status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN if status is None else status)
