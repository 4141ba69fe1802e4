"""Failures seen through Ray Serve, mapped to the errors a client gets."""
from __future__ import annotations

from deployments.api.errors import BadRequest, DeadlineExceeded, HTTPError


def _unwrap(exc: BaseException) -> BaseException:
    """Ray wraps a replica's exception (RayTaskError); the cause is what was raised there."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


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
    return None
