"""The errors a request can end in, as plain exceptions every layer can raise and map."""
from __future__ import annotations

from deployments.api.openai_api import error_body


class DeadlineExceeded(TimeoutError):
    """The request ran past its deadline; its session was cancelled."""


class BadRequest(ValueError):
    """A request the server refuses; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class HTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(message, type_, param, code)
