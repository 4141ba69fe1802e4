"""The gRPC surface without Ray: status codes for the HTTP API's errors, the lookahead.v1
messages for steps and stats, and the standard grpc.health.v1 statuses."""
from __future__ import annotations

import grpc

from deployments.api.errors import HTTPError
from protos.grpc.health.v1 import health_pb2
from protos.lookahead.v1 import lookahead_pb2 as pb

#: grpc.health.v1 service names that stand for the server as a whole: "" (the standard's) and the
#: lookahead.v1 service; each deployed role ("target", "draft", "judge") is a service of its own
WHOLE_SERVER = ("", pb.DESCRIPTOR.services_by_name["LookaheadService"].full_name)

GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
              403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
              413: grpc.StatusCode.RESOURCE_EXHAUSTED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
              500: grpc.StatusCode.INTERNAL, 501: grpc.StatusCode.UNIMPLEMENTED,
              503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}


class StreamFailed(Exception):
    """A streaming RPC failed and its status is set on its context. Raised from the stream, so
    that Ray Serve's gRPC proxy sends that status: it carries a replica's context back only with
    a yielded message, so a stream that fails before (or after) its last message would otherwise
    end with OK. The proxy sends the context's code and details, not this exception."""


def grpc_error(context, code, message: str) -> None:
    if context is not None:
        context.set_code(code)
        context.set_details(message)


def grpc_code(err: HTTPError) -> grpc.StatusCode:
    """The gRPC status for an error the HTTP API would answer with err.status."""
    if err.body["error"]["code"] == "overloaded":  # backpressure: retry later, like 429
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return GRPC_CODES.get(err.status, grpc.StatusCode.INTERNAL if err.status >= 500 else grpc.StatusCode.INVALID_ARGUMENT)


def grpc_fail(context, err: HTTPError) -> None:
    grpc_error(context, grpc_code(err), err.body["error"]["message"])


def pb_steps(steps: list[dict]) -> list[pb.Step]:
    return [pb.Step(text=s["text"], source=s["source"], tokens=s.get("tokens", 0), rejected_draft=s.get("rejected_draft"))
            for s in steps]


def pb_stats(st: dict) -> pb.Stats:
    return pb.Stats(mode=st["mode"], cycles=st["cycles"], drafted_steps=st["drafted_steps"],
                    accepted_steps=st["accepted_steps"], target_steps=st["target_steps"], tokens=st["tokens"],
                    acceptance_rate=st["acceptance_rate"], acceptance_by_depth=st["acceptance_by_depth"],
                    wall_s=st["wall_s"], draft_s=st["draft_s"], target_s=st["target_s"], verify_s=st["verify_s"],
                    degraded=st["degraded"])


def health_status(service: str, roles: list[str], readiness: dict[str, dict]) -> int | None:
    """The grpc.health.v1 status of `service`, given the deployed roles and their readiness
    (the orchestrator's health answer): the server as a whole serves when its target is ready (a
    draft or judge that is not only makes requests run target-only); a role by its own readiness.
    None: not a service of this server (Check answers NOT_FOUND, Watch SERVICE_UNKNOWN)."""
    if service in WHOLE_SERVER:
        service = "target"
    elif service not in roles:
        return None
    ready = bool(readiness.get(service, {}).get("ready"))
    return health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
