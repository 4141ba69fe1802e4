"""Lookahead Reasoning: step-level speculation over a draft engine, a target engine and a verifier.

Read top to bottom: `generate` drives `stream`, which runs either synchronous cycles
(paper, Algorithm 1: draft g steps, expand the target g+1 times in one batch, verify, accept
up to the first mismatch) or the asynchronous rolling window (each finished draft at once
spawns its own target step and the next draft; the root advances as verdicts come in,
in `orchestrator/rolling_window.py`).
`mode="ar"` runs the same loop with no drafts: plain target decoding, step by step.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable

from orchestrator.accept import adopt
from orchestrator.modes import CORE_MODES, SCHEDULES, CoreMode, Schedule
from orchestrator.protocols import StepEngine, Verifier
from orchestrator.rolling_window import run_async
from orchestrator.types import (
    GenerationResult,
    Prompt,
    SamplingParams,
    Stats,
    Step,
    StepRequest,
    VerifyPair,
)


@dataclass
class LookaheadParams:
    mode: CoreMode = "lr"
    depth: int = 4  # g: drafted steps per cycle
    width: int = 1  # W: sibling drafts per position (distinct seeds)
    schedule: Schedule = "sync"
    max_step_tokens: int = 100
    max_tokens: int = 512
    target_sampling: SamplingParams = field(default_factory=SamplingParams)
    draft_sampling: SamplingParams = field(default_factory=SamplingParams)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in CORE_MODES:
            raise ValueError(f"mode must be 'lr' or 'ar', got {self.mode!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be 'sync' or 'async', got {self.schedule!r}")
        for name, lo, hi in (("depth", 0, 16), ("width", 1, 8), ("max_step_tokens", 1, 4096)):
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")


def derive_seed(base: int, *parts: int) -> int:
    """Reproducible, distinct seeds per (cycle, depth, sibling): siblings must not be clones."""
    digest = hashlib.blake2b(repr((base, *parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


class Lookahead:
    """One request's session: the accepted prefix, in-flight branches and stats."""

    def __init__(self, target: StepEngine, draft: StepEngine | None, verifier: Verifier | None,
                 prompt: Prompt, params: LookaheadParams, request_id: str = "") -> None:
        self.target, self.draft, self.verifier = target, draft, verifier
        self.prompt, self.params, self.request_id = prompt, params, request_id
        self.steps: list[Step] = []
        self.stats = Stats(mode=params.mode)
        self.speculate = params.mode == "lr" and params.depth > 0 and draft is not None and verifier is not None
        self._calls = 0

    # -- engine calls -------------------------------------------------------------------
    def _request(self, prefix: list[Step], sampling: SamplingParams) -> StepRequest:
        self._calls += 1
        return StepRequest(self.prompt, list(prefix), sampling, self.params.max_step_tokens,
                           self.params.max_tokens, f"{self.request_id}-{self._calls}")

    async def _timed(self, phase: str, aw: Awaitable):
        t0 = time.perf_counter()
        try:
            return await aw
        finally:
            setattr(self.stats, phase, getattr(self.stats, phase) + time.perf_counter() - t0)

    async def _target_steps(self, prefixes: list[list[Step]]) -> list[Step]:
        sampling = self.params.target_sampling
        reqs = [self._request(p, sampling.with_seed(self._seed(len(p), 0, 0, sampling))) for p in prefixes]
        return await self._timed("target_s", self.target.generate_steps(reqs))

    async def _draft_steps(self, prefix: list[Step], cycle: int) -> list[Step]:
        sampling = self.params.draft_sampling
        reqs = [self._request(prefix, sampling.with_seed(self._seed(len(prefix), cycle, k + 1, sampling)))
                for k in range(self.params.width)]
        steps = await self._timed("draft_s", self.draft.generate_steps(reqs))
        self.stats.drafted_steps += len(steps)
        for s in steps:
            s.source = "draft"
        return steps

    def _seed(self, position: int, cycle: int, sibling: int, sampling: SamplingParams) -> int | None:
        if sampling.greedy:
            return None
        base = sampling.seed if sampling.seed is not None else self.params.seed
        return derive_seed(base, position, cycle, sibling)

    def _degrade(self, what: str, exc: BaseException) -> None:
        """A failing draft or judge must not fail the request: continue as target-only."""
        self.stats.degraded.append(f"{what}: {type(exc).__name__}: {exc}"[:300])
        self.speculate = False

    # -- the accepted prefix --------------------------------------------------------------
    def _can_draft_after(self, prefix: list[Step]) -> bool:
        # Delimiter gate: a child of a context that does not end a step is never accepted.
        return self.speculate and (not prefix or prefix[-1].ends_step)

    def _emit(self, step: Step) -> Step:
        self.steps.append(step)
        n = len(step.token_ids)
        self.stats.tokens += n
        if step.source == "draft":
            self.stats.draft_tokens += n
        else:
            self.stats.target_tokens += n
            self.stats.target_steps += 1
        return step

    @property
    def done(self) -> bool:
        return bool(self.steps) and (self.steps[-1].finished or not self.steps[-1].token_ids)

    # -- synchronous cycles (paper, Algorithm 1) ------------------------------------------
    async def _sync_cycle(self) -> list[Step]:
        prefix = list(self.steps)
        chain: list[list[Step]] = []  # chain[i]: the W sibling drafts at depth i
        if self._can_draft_after(prefix):
            try:
                context = prefix
                for _ in range(self.params.depth):
                    siblings = await self._draft_steps(context, self.stats.cycles)
                    chain.append(siblings)
                    if not siblings[0].ends_step:  # EOS or cut: nothing may follow it
                        break
                    context = context + [siblings[0]]
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any draft failure degrades to target-only
                self._degrade("draft", exc)
                chain = []
        # Target expansions T(P), T(P+d1), ..., one batch: each conditioned on the drafts before it.
        leads = [s[0] for s in chain]
        contexts = [prefix] + [prefix + leads[: i + 1] for i, d in enumerate(leads) if d.ends_step]
        targets = await self._target_steps(contexts)
        if not chain:
            return [targets[0]]
        try:
            verdicts = await self._verify_chain(prefix, chain, targets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            self._degrade("verifier", exc)
            return [targets[0]]
        return self._accept(chain, targets, verdicts)

    async def _verify_chain(self, prefix, chain, targets) -> dict[tuple[int, int], bool]:
        pairs, index = [], []
        for depth, siblings in enumerate(chain):
            context = prefix + [s[0] for s in chain[:depth]]
            for k, d in enumerate(siblings):
                pairs.append(VerifyPair(self.prompt, context, d, targets[depth]))
                index.append((depth, k))
        verdicts = await self._timed("verify_s", self.verifier.verify(pairs))
        return {key: v.accepted for key, v in zip(index, verdicts)}

    def _accept(self, chain, targets, accepted: dict[tuple[int, int], bool]) -> list[Step]:
        out: list[Step] = []
        for depth, siblings in enumerate(chain):
            k = next((k for k in range(len(siblings)) if accepted[depth, k]), None)
            self.stats.count_verified(depth, k is not None)
            if k is None:
                return out + [targets[depth]]  # first mismatch: the target's own step
            out.append(adopt(siblings[k], targets[depth]))
            # Deeper targets were conditioned on sibling 0; a finished or cut step ends the cycle.
            if k != 0 or not out[-1].ends_step:
                return out
        if len(targets) > len(chain):
            out.append(targets[len(chain)])  # all accepted: the bonus step
        return out

    # -- driver -----------------------------------------------------------------------
    async def stream(self) -> AsyncIterator[list[Step]]:
        """Yield the steps each cycle accepts, until EOS or the token budget."""
        t0 = time.perf_counter()
        try:
            if self.speculate and self.params.schedule == "async":
                async for steps in run_async(self):
                    yield steps
                return
            while not self.done:
                steps = await self._sync_cycle()
                self.stats.cycles += 1
                yield [self._emit(s) for s in steps]
        finally:
            self.stats.wall_s = time.perf_counter() - t0

    def result(self) -> GenerationResult:
        last = self.steps[-1] if self.steps else None
        reason = "stop" if last is not None and last.stop_reason == "eos" else "length"
        return GenerationResult("".join(s.text for s in self.steps), list(self.steps), self.stats, reason)


async def generate(target: StepEngine, prompt: Prompt, params: LookaheadParams,
                   draft: StepEngine | None = None, verifier: Verifier | None = None,
                   request_id: str = "") -> GenerationResult:
    session = Lookahead(target, draft, verifier, prompt, params, request_id)
    async for _ in session.stream():
        pass
    return session.result()
