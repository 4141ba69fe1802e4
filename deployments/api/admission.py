"""What the ingress decides itself so that Ray Serve's proxy never answers for it: how many
generation requests one replica holds at once, and when a request's deadline ends it.

Serve's proxy answers a full queue (503) and its own timeout (408) in plain text, Serve's format.
The ingress is therefore given no Serve-level limit (deployments/serve_config.py) and a proxy
timeout above any deadline; it refuses past its own limit and ends requests at their deadlines
with OpenAI error bodies.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

from deployments.api.errors import DeadlineExceeded, HTTPError

#: the ingress's own guard after the deadline it hands the orchestrator: the orchestrator's
#: deadline (which the metrics count as a timeout) fires first; the guard covers an orchestrator
#: that cannot start the request at all (no replica, a target that does not answer)
GUARD_S = 0.25


def guard_s(timeout_s: float) -> float:
    """The guard for a deadline of `timeout_s`: GUARD_S, shorter for short deadlines."""
    return min(GUARD_S, timeout_s / 4)


def admission_limit(max_ongoing_requests: int, max_queued_requests: int) -> int | None:
    """Generation requests one ingress replica holds at once: what Serve would have held running
    plus queued with these limits (-1 queued: no limit). The ingress runs them all at once: the
    real queue is the orchestrator's (its own Serve limits, answered as 503 `overloaded` too)."""
    return None if max_queued_requests < 0 else max_ongoing_requests + max_queued_requests


class Admission:
    """Counts one replica's generation requests against its limit; one event loop, no lock."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        """Take a place for a request; a full replica refuses at once with 503 `overloaded` (and
        Retry-After), as the orchestrator's full queue does. Give it back with leave()."""
        if self.limit is not None and self.active >= self.limit:
            raise HTTPError(503, f"server overloaded: {self.limit} requests in flight on this replica, retry later",
                            "overloaded_error", code="overloaded")
        self.active += 1

    def leave(self) -> None:
        self.active -= 1

    @contextlib.contextmanager
    def slot(self):
        """A place held for the request's whole life (a stream's too)."""
        self.enter()
        try:
            yield
        finally:
            self.leave()


def before_proxy(proxy_timeout_s: float) -> float:
    """The deadline to keep for a request Serve's proxy will time out after `proxy_timeout_s`
    (a client may ask it for one with Serve's `x-request-timeout-seconds` header): early enough
    that the application's 504 (at this deadline, its guard_s later at most) reaches the client
    before the proxy's plain-text 408. The proxy starts its clock before the request reaches the
    ingress; half the time, at most a second, covers that, the guard and the way back."""
    return proxy_timeout_s - min(1.0, proxy_timeout_s / 2)


class Deadline:
    """A request's deadline as the ingress keeps it, from the moment the request reached this
    replica: the orchestrator gets what is left of it when the request is handed on (its own
    deadline ends the session and is counted as a timeout); the ingress gives up a guard_s after
    the deadline whatever the orchestrator does (a dead or unreachable replica, a target that
    never answers), with the same 504."""

    def __init__(self, timeout_s: float, start: float | None = None) -> None:
        self.timeout_s = timeout_s
        self.at = (time.monotonic() if start is None else start) + timeout_s

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def error(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"request exceeded its deadline of {self.timeout_s:g}s")

    async def within(self, awaitable):
        try:
            return await asyncio.wait_for(awaitable, self.left() + guard_s(self.timeout_s))
        except asyncio.TimeoutError:
            if self.left() > 0:
                raise  # a timeout of its own, not the deadline
            raise self.error() from None

    async def guard(self, gen):
        """The items of `gen` (the orchestrator's stream) until the guard runs out."""
        while True:
            try:
                item = await self.within(anext(gen))
            except StopAsyncIteration:
                return
            yield item
