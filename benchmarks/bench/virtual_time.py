"""An asyncio event loop on a simulated clock: when nothing is ready to run, the clock jumps to
the next timer instead of waiting for it.

Code that measures time with the loop's clock (`loop.time()`, as the orchestrator does) and
spends it with `asyncio.sleep` then sees exactly the durations it was given, however busy the
machine is: a session over simulated engines is timed without wall-clock noise, and a run of
hours of simulated decoding takes seconds. Real I/O still works (polled without waiting), but
work done in threads is invisible to the simulated clock: use it with coroutines only.
"""
from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None):
        events = super().select(0)
        if events or timeout is None:
            # nothing scheduled at all: only real I/O can wake the loop, so wait for it
            return events or super().select(timeout)
        self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += max(0.0, seconds)


def run_virtual(main: Awaitable[T]) -> T:
    """asyncio.run for a coroutine, on a fresh VirtualTimeLoop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        # as asyncio.run: whatever is still running is cancelled, inside the loop
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
