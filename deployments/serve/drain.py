"""Stopping an ingress replica without cutting requests off: drain, then abort what is left.

Serve stops every deployment of a deleted application at once, and a stopping replica leaves its
callers' routing tables at once: a request still running when its application is deleted loses its
orchestrator and engines between two cycles. So `lookahead serve` and `lookahead demo` stop in two
phases before they delete anything (deployments/cli/shutdown.py): every ingress replica is told to
drain (new requests are refused with 503; those in flight run on, the whole chain behind them still
up), and when the grace period is over, those still in flight are aborted with a clean error (an
error event and [DONE] on a stream, a 503 body otherwise, UNAVAILABLE on gRPC).
"""
from __future__ import annotations

import asyncio

from deployments.api.errors import HTTPError


def shutting_down() -> HTTPError:
    return HTTPError(503, "the server is shutting down; retry on another replica or once it is back",
                     "service_unavailable", code="shutting_down")


class Drain:
    """One ingress replica's requests in flight, and whether it still admits new ones."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._abort: asyncio.Event | None = None  # made on the replica's loop, at first use

    def admit(self) -> None:
        """Count a new request in (`done` counts it out), or refuse it while draining."""
        if self.draining:
            raise shutting_down()
        self.in_flight += 1

    def done(self) -> None:
        self.in_flight -= 1

    def start(self) -> int:
        """Refuse new requests from now on; returns how many are still in flight."""
        self.draining = True
        return self.in_flight

    def abort(self) -> int:
        """End every request in flight with the shutdown error; returns how many were."""
        self.draining = True
        self._event().set()
        return self.in_flight

    def _event(self) -> asyncio.Event:
        if self._abort is None:
            self._abort = asyncio.Event()
        return self._abort

    async def race(self, awaitable):
        """`awaitable`'s result, or the shutdown error once the replica aborts (the awaitable is
        cancelled then)."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._event().wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            stop.cancel()
        if not work.done():
            work.cancel()
            raise shutting_down()
        return work.result()

    async def chunks(self, gen):
        """The chunks of an orchestrator stream until it ends or the replica aborts."""
        while True:
            try:
                chunk = await self.race(gen.__anext__())
            except StopAsyncIteration:
                return
            yield chunk
