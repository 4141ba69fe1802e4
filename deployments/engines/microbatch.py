"""Micro-batching of concurrent step calls into one blocking forward loop.

Calls that arrive while a batch is running queue up and are drained together into the next one,
so the async schedule's concurrent branches share forwards. The blocking `run(rows)` runs in a
worker thread; each call waits on its own future and cancels its rows if its caller goes away.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Sequence


class MicroBatcher:
    def __init__(self, run: Callable[[list], None], max_batch: int) -> None:
        self.run, self.max_batch = run, max_batch
        self._queue: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.worker: asyncio.Task | None = None  # held: the loop keeps only weak refs to tasks

    async def submit(self, rows: Sequence) -> None:
        """Run `rows` (objects with a `cancelled` threading.Event) in the next batch; return when done."""
        fut = asyncio.get_running_loop().create_future()
        await self._enqueue(list(rows), fut)
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            for row in rows:  # the forward loop drops cancelled rows at its next token
                row.cancelled.set()
            raise

    def failure(self) -> BaseException | None:
        """The error that ended the worker, if it died (health checks)."""
        w = self.worker
        if w is not None and w.done() and not w.cancelled():
            return w.exception()
        return None

    async def _enqueue(self, rows: list, fut: asyncio.Future) -> None:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop:
            # A queue and its worker belong to one event loop; an engine outliving its first
            # loop (scripts, tests calling asyncio.run twice) gets a fresh pair on the new one.
            self._queue, self._loop = asyncio.Queue(), loop
            self.worker = loop.create_task(self._drain(self._queue))
        await self._queue.put((rows, fut))

    async def _drain(self, queue: asyncio.Queue) -> None:
        while True:
            jobs = [await queue.get()]
            while not queue.empty() and sum(len(r) for r, _ in jobs) < self.max_batch:
                jobs.append(queue.get_nowait())
            jobs = [(rows, fut) for rows, fut in jobs if not fut.done()]
            rows = [row for r, _ in jobs for row in r]
            try:
                if rows:
                    await asyncio.to_thread(self.run, rows)
                for _, fut in jobs:
                    if not fut.done():
                        fut.set_result(None)
            except Exception as exc:  # noqa: BLE001 - the callers get the error, the worker lives on
                for _, fut in jobs:
                    if not fut.done():
                        fut.set_exception(exc)
