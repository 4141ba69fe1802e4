"""The errors a request can end in, as plain exceptions every layer can raise and map."""
from __future__ import annotations

import uuid

from deployments.api.openai_api import error_body


class DeadlineExceeded(TimeoutError):
    """The request ran past its deadline; its session was cancelled."""


class BadRequest(ValueError):
    """A request the server refuses; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


#: seconds a client should wait before retrying a 503 (the Retry-After header): the queues drain
#: at the speed of one cycle, a second or so
RETRY_AFTER_S = 1


def retry_headers(status: int) -> dict[str, str]:
    """Retry-After on every 503 (overloaded, not ready), as HTTP clients and proxies expect."""
    return {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else {}


class HTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(message, type_, param, code)
        self.headers = retry_headers(status)


def new_error_id() -> str:
    """Ties a 500 the client sees to the server log line with the traceback."""
    return uuid.uuid4().hex[:12]


def internal_error(error_id: str) -> HTTPError:
    """What a client learns of an unexpected failure: that it happened, and its id. No traceback."""
    return HTTPError(500, f"internal server error (error id {error_id}; the details are in the server log)",
                     "server_error", code="internal_error")


def internal_error_body(error_id: str) -> dict:
    return internal_error(error_id).body
