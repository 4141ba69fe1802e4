"""The asynchronous rolling window (the reference implementation's schedule).

Each finished draft at once spawns its own target step and the next draft, up to depth g
ahead of the accepted prefix; the root advances as verdicts come in, and every subtree a
verdict rules out is cancelled (which cancels its engine work). `run_async` drives one
session (`orchestrator.lookahead.Lookahead`) and yields the steps it accepts, one at a time.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

from orchestrator.accept import adopt
from orchestrator.types import Stats, Step, VerifyPair


async def run_async(lr) -> AsyncIterator[list[Step]]:
    """Drive session `lr` until it is done, yielding each accepted step."""
    root = _Node.spawn(lr, list(lr.steps), 0)
    root.grow(lr, len(root.prefix))
    run = 0  # drafts accepted since the last target step: the depth being verified
    try:
        while not lr.done:
            target = await root.target
            drafts = await root.gather_drafts(lr)
            k = await _first_accepted(lr, root.prefix, drafts, target, run) if drafts else None
            lr.stats.cycles += 1
            if k is None:
                step, run = lr._emit(target), 0
                next_root = None if lr.done else _Node.spawn(lr, list(lr.steps), lr.stats.cycles)
            else:
                step, run = lr._emit(adopt(drafts[k], target)), run + 1
                next_root = None if lr.done else root.child(lr, drafts, k)
            root.cancel(keep=next_root, stats=lr.stats)
            yield [step]
            if next_root is None:
                break
            root = next_root
            root.prefix = list(lr.steps)  # same text; the emitted steps carry target ids
            root.grow(lr, len(root.prefix))
    finally:
        root.cancel(keep=None, stats=lr.stats)


async def _first_accepted(lr, prefix, drafts: list[Step], target: Step, depth: int) -> int | None:
    try:
        pairs = [VerifyPair(lr.prompt, prefix, d, target) for d in drafts]
        verdicts = await lr._timed("verify_s", lr.verifier.verify(pairs))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001
        lr._degrade("verifier", exc)
        return None
    k = next((k for k, v in enumerate(verdicts) if v.accepted), None)
    lr.stats.count_verified(depth, k is not None)
    return k


class _Node:
    """A position in the async speculation tree: one target step and W drafts after `prefix`."""

    def __init__(self, prefix: list[Step], target: asyncio.Future, drafts: asyncio.Future | None) -> None:
        self.prefix, self.target, self.drafts = prefix, target, drafts
        self.children: dict[int, _Node] = {}
        self.cancelled = False

    @classmethod
    def spawn(cls, lr, prefix: list[Step], cycle: int) -> "_Node":
        target = _first(asyncio.ensure_future(lr._target_steps([prefix])))
        drafts = asyncio.ensure_future(lr._draft_steps(prefix, cycle)) if lr._can_draft_after(prefix) else None
        return cls(prefix, target, drafts)

    async def gather_drafts(self, lr) -> list[Step]:
        if self.drafts is None or not lr.speculate:
            return []
        try:
            return await self.drafts
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing draft degrades to target-only
            lr._degrade("draft", exc)
            return []

    def child(self, lr, drafts: list[Step], k: int) -> "_Node":
        if k not in self.children:
            self.children[k] = _Node.spawn(lr, self.prefix + [drafts[k]], lr.stats.cycles)
        return self.children[k]

    def _finished_drafts(self) -> list[Step] | None:
        d = self.drafts
        if d is None or not d.done() or d.cancelled() or d.exception() is not None:
            return None
        return d.result()

    def grow(self, lr, root_len: int) -> None:
        """Spawn children of finished drafts while inside the window (drafts up to depth g)."""
        if self.cancelled or self.drafts is None or len(self.prefix) - root_len >= lr.params.depth - 1:
            return
        drafts = self._finished_drafts()
        if drafts is None:
            if not self.drafts.done():
                self.drafts.add_done_callback(lambda _f: self.grow(lr, root_len))
            return
        for k, d in enumerate(drafts):
            # Delimiter gate: only a complete step gets children.
            if k not in self.children and d.ends_step and not lr.done:
                self.children[k] = _Node.spawn(lr, self.prefix + [d], lr.stats.cycles)
        for c in list(self.children.values()):
            c.grow(lr, root_len)

    def cancel(self, keep: "_Node | None", stats: Stats) -> None:
        """Cancel every task in this subtree except the kept child's subtree."""
        if self is keep:
            return
        self.cancelled = True
        for t in (self.target, self.drafts):
            if t is not None and not t.done():
                t.cancel()
                stats.cancelled_branches += 1
        for c in self.children.values():
            c.cancel(keep, stats)


def _first(task: asyncio.Task) -> asyncio.Future:
    """A future for element 0 of a task that returns a one-element list (cancel passes through)."""
    async def first():
        return (await task)[0]

    fut = asyncio.ensure_future(first())
    fut.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)
    return fut
