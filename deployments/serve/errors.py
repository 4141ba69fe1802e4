"""Failures seen through Ray Serve, mapped to the errors a client gets.

Ray's own errors carry actor ids, node ids and addresses in their text: a client never reads
that text, only the mapped error (the full exception goes to the replica's log).
"""
from __future__ import annotations

from deployments.api.errors import BadRequest, DeadlineExceeded, HTTPError
from deployments.serve.remote import replica_lost


def _unwrap(exc: BaseException) -> BaseException:
    """Ray wraps a replica's exception (RayTaskError); the cause is what was raised there."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def replica_unavailable() -> HTTPError:
    """A replica the request ran on died or went away (Serve starts another): retry."""
    return HTTPError(503, "the server lost a replica while serving this request; retry later",
                     "service_unavailable", code="replica_unavailable")


def http_error_of(exc: BaseException) -> HTTPError | None:
    """The client-facing error for a failure, or None for a real server error (500)."""
    from ray.serve.exceptions import BackPressureError

    e = next((c for c in (_unwrap(exc), exc) if isinstance(c, (BadRequest, DeadlineExceeded, BackPressureError))),
             None)
    if isinstance(e, BadRequest):
        return HTTPError(400, str(e.args[0]) if e.args else str(e), param=getattr(e, "param", None))
    if isinstance(e, DeadlineExceeded):
        return HTTPError(504, str(e), type_="timeout_error", code="deadline_exceeded")
    if isinstance(e, BackPressureError):
        return HTTPError(503, "server overloaded: too many queued requests, retry later", type_="overloaded_error",
                         code="overloaded")
    if replica_lost(exc) or replica_lost(_unwrap(exc)):
        return replica_unavailable()
    return None


def public_reason(exc: BaseException) -> str:
    """A failure as an open answer (/health, stats) may show it: its kind, never Ray's text."""
    if replica_lost(exc) or replica_lost(_unwrap(exc)):
        return "replica unavailable"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(_unwrap(exc)).__name__
