"""The lookahead.v1 gRPC surface without Ray: status codes for the HTTP API's errors, and the
protobuf messages for steps and stats."""
from __future__ import annotations

import grpc

from deployments.api.errors import HTTPError
from protos.lookahead.v1 import lookahead_pb2 as pb

GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
              403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
              413: grpc.StatusCode.RESOURCE_EXHAUSTED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
              500: grpc.StatusCode.INTERNAL, 501: grpc.StatusCode.UNIMPLEMENTED,
              503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}


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
