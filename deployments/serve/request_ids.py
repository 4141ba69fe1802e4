"""One request id from the client to the engines: Serve's own.

Serve's HTTP proxy takes a request's id from its ``X-Request-ID`` header (or makes one), returns
it in the response's ``X-Request-ID``, hands it on through every DeploymentHandle call the
request leads to (ingress -> orchestrator -> draft/target/judge), and prints it in each replica
log line. The OpenAI response id embeds it (``chatcmpl-<serve request id>``), so a response id
is enough to find every log line of its request, in every deployment.
"""
from __future__ import annotations

import uuid


def serve_request_id() -> str:
    """Serve's id of the request being handled here (a fresh one outside a request)."""
    from ray.serve.context import _get_serve_request_context  # no public accessor in Ray 2.60

    return _get_serve_request_context().request_id or uuid.uuid4().hex


def response_id(prefix: str) -> str:
    """The id a client sees (``chatcmpl-...``, ``cmpl-...``, ``grpc-...``) for the current request."""
    return f"{prefix}-{serve_request_id()}"
