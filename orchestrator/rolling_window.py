"""The asynchronous rolling window (the reference implementation's schedule).

The speculation tree holds one node per position ahead of the accepted prefix: the target's
own step there and the W drafts after it. Each finished draft at once spawns its child node
(target step and next drafts), so with window depth g there are drafts up to depth g and
g + 1 target steps in flight (T(P), T(P+d1), ..., T(P+d1..dg)), as in a sync cycle's batch.
A node's (draft, target) pairs are judged as soon as both are ready, anywhere in the tree,
ahead of the root. The root advances when its target step is ready: a draft not finished by
then is skipped (the target wins, nothing waits for it), a finished one needs its verdict.
Every subtree a verdict rules out is cancelled (which cancels its engine work), and closing
the stream cancels and awaits every task the window started.

Draft seeds derive from a node's place in the tree (its text path), never from when a callback
spawned it, so a sampled run is reproducible whatever the timing. `run_async` drives one
session (`orchestrator.lookahead.Lookahead`) and yields the steps it accepts, one at a time.
"""
from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import AsyncIterator

from orchestrator.accept import adopt, mark_rejected
from orchestrator.types import Step, Verdict, VerifyPair


async def run_async(lr) -> AsyncIterator[list[Step]]:
    """Drive session `lr` until it is done, yielding each accepted step."""
    window = _Window(lr)
    try:
        async with aclosing(window.run()) as steps:
            async for step in steps:
                yield [step]
    finally:
        await window.close()


class _Node:
    """A position in the speculation tree: the target's step and W drafts after `prefix`."""

    def __init__(self, prefix: list[Step], target: asyncio.Task) -> None:
        self.prefix, self.target = prefix, target
        self.drafts: asyncio.Task | None = None
        self.verdicts: asyncio.Task | None = None
        self.children: dict[int, _Node] = {}
        self.cancelled = False
        self.failure_noted = False  # a failed draft call is recorded once
        self.aside = False  # its drafts are judged beside the answer, which did not wait for them


def _ok(task: asyncio.Task | None):
    """The task's result when it finished without error, else None."""
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()


class _Window:
    def __init__(self, lr) -> None:
        self.lr = lr
        self.tasks: set[asyncio.Task] = set()  # everything started, so closing leaves nothing running
        self.depth, self.probe = 0, False
        self.root = self._spawn(list(lr.steps))

    # -- starting work --------------------------------------------------------------------
    def _task(self, coro) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self._finished)
        return t

    def _finished(self, t: asyncio.Task) -> None:
        self.tasks.discard(t)
        if not t.cancelled():
            t.exception()  # retrieved here; the root re-raises a target failure when it awaits it

    def _spawn(self, prefix: list[Step]) -> _Node:
        node = _Node(prefix, self._task(self._target(prefix)))
        node.target.add_done_callback(lambda _t: self._ready(node))
        return node

    async def _target(self, prefix: list[Step]) -> Step:
        return (await self.lr._target_steps([prefix]))[0]

    def _add_drafts(self, node: _Node) -> None:
        lr = self.lr
        if node.drafts is not None or node.cancelled or lr.done or not lr._can_draft_after(node.prefix):
            return
        node.drafts = self._task(lr._draft_steps(node.prefix))
        node.drafts.add_done_callback(lambda _t: self._ready(node))

    def _ready(self, node: _Node) -> None:
        """A node's target or drafts finished: judge the node if both are ready, then grow."""
        if node.cancelled:
            return
        d = node.drafts
        if d is not None and d.done() and not d.cancelled() and d.exception() is not None:
            if not node.failure_noted:
                node.failure_noted = True
                self.lr._degrade("draft", d.exception())
        drafts, target = _ok(node.drafts), _ok(node.target)
        if drafts is not None and target is not None and node.verdicts is None:
            pairs = [VerifyPair(self.lr.prompt, node.prefix, x, target) for x in drafts]
            node.verdicts = self._task(self.lr._verify(pairs))
            node.verdicts.add_done_callback(lambda t: self._judged(t))
        self.grow()

    def _judged(self, t: asyncio.Task) -> None:
        if not t.cancelled() and t.exception() is not None:
            self.lr._degrade("verifier", t.exception())

    def grow(self) -> None:
        """Start what the window of depth g holds: drafts at relative depth < g (and at the root
        of a probe), target steps up to relative depth g."""
        lr, base = self.lr, len(self.root.prefix)
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.cancelled:
                continue
            rel = len(node.prefix) - base
            if rel < self.depth or (node is self.root and self.probe):
                self._add_drafts(node)
            drafts = _ok(node.drafts)
            if drafts is not None and rel < self.depth:
                for k, d in enumerate(drafts):
                    # Delimiter gate: only a complete step gets children.
                    if k not in node.children and d.ends_step and not lr.done:
                        node.children[k] = self._spawn(node.prefix + [d])
            stack.extend(node.children.values())

    # -- the root ---------------------------------------------------------------------------
    async def run(self) -> AsyncIterator[Step]:
        lr = self.lr
        run = 0  # drafts accepted since the last target step: the depth being verified
        self._retune()
        while not lr.done:
            root = self.root
            target = await root.target
            # the answer does not wait for a probe's drafts, nor for drafts still running (the
            # target wins): those are judged aside, for the acceptance estimate only
            aside = (root.drafts is not None and not root.failure_noted
                     and (self.probe or not root.drafts.done()))
            drafts = None if aside else _ok(root.drafts)  # None also when failed or absent
            verdicts: list[Verdict] = []
            if drafts is not None:
                if root.verdicts is None:
                    self._ready(root)
                try:
                    verdicts = await root.verdicts
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - noted by _judged; this position is the target's
                    verdicts = []
            k = next((i for i, v in enumerate(verdicts) if v.accepted), None)
            if verdicts:
                lr.stats.count_verified(run, k is not None)
            lr.stats.cycles += 1
            if k is None:
                step, run = lr._emit(mark_rejected(target, drafts or [], verdicts)), 0
                nxt = None if lr.done else self._spawn(list(lr.steps))
            else:
                step, run = lr._emit(adopt(drafts[k], target, verdicts[k])), run + 1
                nxt = None if lr.done else (root.children.get(k) or self._spawn(list(lr.steps)))
            if aside and not lr.done:
                root.aside = True  # _cancel leaves its drafts and verdicts running
                self._task(lr.judge_aside(root.prefix, root.drafts, target, run, root.verdicts))
            self._cancel(root, keep=nxt)
            if nxt is not None:
                self.root = nxt
                nxt.prefix = list(lr.steps)  # same text; the emitted steps carry target ids
                self._retune()
            yield step

    def _retune(self) -> None:
        """The window depth for the new root (the policy's choice under "auto"), then grow."""
        self.depth, self.probe = self.lr._choose_depth(self.root.prefix)
        self.lr._count_cycle(self.depth, self.probe)
        self.grow()

    # -- cancelling -------------------------------------------------------------------------
    def _cancel(self, node: _Node, keep: _Node | None) -> None:
        """Cancel every task in this subtree except the kept child's subtree."""
        if node is keep:
            return
        node.cancelled = True
        for t in (node.target, node.drafts, node.verdicts):
            if node.aside and t is not node.target:
                continue
            if t is not None and not t.done():
                t.cancel()
                if t is not node.verdicts:
                    self.lr.stats.cancelled_branches += 1
        for c in node.children.values():
            self._cancel(c, keep)

    async def close(self) -> None:
        self._cancel(self.root, keep=None)
        pending = [t for t in self.tasks if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
