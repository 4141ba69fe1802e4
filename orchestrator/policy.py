"""Adaptive speculation depth (`depth: "auto"`): before each cycle, run the depth g in
0..max_depth that the cost model (orchestrator/cost_model.py) predicts to be fastest from what
the request (and its prior) has measured.

Acceptance. b_d is the chance that a draft at depth d is accepted given that every shallower
one was (d: drafts accepted since the last target step). Each depth has a Beta posterior

    b_d ~ Beta(a_d + k m, (n_d - a_d) + k (1 - m)),

a_d of n_d verdicts at depth d accepted, under a prior that every depth shares: k =
`shared_weight` pseudo-verdicts at the pooled rate m = (A + 1/2) / (N + 1) of all depths'
verdicts. A depth never reached borrows the pool's belief instead of being penalised for having
no evidence of its own.

Evidence decays within a request. Each cycle that brings verdicts first multiplies every count
by a decay, in two memories: a long one (`decay`, about the last 20 observed cycles) that the
estimate normally rests on, and a short one (`fast_decay`, about the last 3) that takes over
while its pooled rate is more than two of its standard deviations from the long one's. Steady
acceptance is estimated from many verdicts; a drafter that turns good (or bad) mid-answer is
followed within a few cycles.

Choice. The depth is chosen on an upper bound, each b_d at its posterior mean plus `optimism`
standard deviations (one while the short memory has taken over): the best g, or g = 0 (plain
target decoding) when no g > 0 beats 1. A little optimism tries an uncertain depth while it
might pay; the bound is the only caution-or-courage knob (no gain threshold on top). Probes keep
b_0 measured at g = 0, so the bound stays close to the mean where b_0 decides.

Costs, in target-step times T(1), from the request's Stats blended with the prior's:
- r(n) = T(n) / T(1): per token of a row, n being the rows in one call or, in the async window,
  the target rows in flight while the call ran (time-weighted); smoothed towards a line
  1 + s (n - 1) fitted on the measured n > 1.
- c = D / T(1), D the draft device's busy seconds per drafted position (Stats.draft_s counts
  drafts that ran at once once). A sync cycle drafts alone, a probe beside the target step:
  where probes show that their draft slowed the target step (shared cores), the draft was slowed
  by about as much, so D alone = D beside - the target's extra seconds until drafting cycles
  time it alone.
- v = V / T(1), one verification call.
- The schedule's formula: sync cycles cost g c + r(g + 1) + v (cost_model.cycle_speedup); the
  async window overlaps drafting with the target (cost_model.async_speedup).

Contention. The async window's drafts run beside target steps; where they slow the target
(shared cores, or a memory bus shared by cores of their own), the window is costed as sync
cycles. A probe's target step against a plain one measures it, so under the async schedule the
policy times one of each (here or in the prior) before it drafts at g > 0.

Probes. At g = 0 a probe drafts one step beside the target's own step (no extra target row);
the answer takes the target's step without waiting, and the draft is judged aside for the
estimate. A probe is costed as it ran: the wall seconds per token of probe cycles against plain
g = 0 cycles (the session refreshes Stats.wall_s before each decision). Probes run every k
cycles, k = ceil(probe cost / `probe_budget`) within `min_probe_every`..`max_probe_every`
(none where no g > 0 would pay even if every draft were accepted: nothing a probe finds could
change the choice):
where the draft has its own device a probe costs next to nothing and runs every cycle; on
shared cores it costs a draft step and runs about every 12. The count of cycles goes on across
requests (a request starts at the prior's cycle count modulo k): requests shorter than k still
probe, about once in k cycles among them.

Load. Where draft and target share a device (the deployment says so, or probes showed it), a
draft step's seconds are taken from every answer the target is writing, not only from the one
that drafts: under N concurrent answers its cost is N times what that answer sees of it (c for
depths, a probe's cost for the probe interval, whose cap stretches to N x `max_probe_every`), so
a loaded replica drafts only where that still pays and probes about as often as one answer
alone would. N is `load`, which the session sets before each decision; where each role has its
own device N counts as 1.

Prior. `prior` is a dict shaped like `Stats.to_dict()`: the totals of earlier requests with the
same model pair, verifier, sampling and schedule (`PriorBook`). Its verdicts start the
posteriors (at most `prior_verdicts` of them at depth 0), its timings count as at most
`prior_calls` calls each, and its cycle costs (what plain and probe cycles took) as at most
`prior_calls` cycles of each kind: a short request spaces its probes by what they cost before.

Pure: no I/O, no clock, no randomness. The session calls `decide(stats)` once per cycle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from orchestrator.cost_model import async_speedup, cycle_speedup
from orchestrator.types import Stats

AUTO = "auto"


@dataclass
class Decision:
    depth: int  # g for this cycle
    probe: bool  # g == 0 plus one drafted step checked against the target's own step
    reason: str


@dataclass
class Estimate:
    b_mean: list[float]  # posterior mean of b_0 .. b_(max_depth-1)
    b_upper: list[float]  # the optimistic bound the depth is chosen on
    c: float  # draft step / target step, as a cycle of this schedule pays it
    v: float
    r: list[float]  # r[n-1] for n = 1 .. max_depth + 1
    speedup: list[float]  # predicted speedup by g = 0 .. max_depth, at the bound
    expected: list[float]  # the same at the posterior mean
    probe_cost: float  # a probe cycle's extra wall time over a plain one, in plain-cycle times
    ceiling: float  # the best speedup any g > 0 would give were every draft accepted
    load: int  # the answers a draft step is costed for (1 where the draft has its own device)
    timed: bool  # target and draft timings exist (measured here or in the prior)
    sources: dict = field(default_factory=dict)  # where each cost came from: "run", "prior", "default", ...

    def to_dict(self) -> dict:
        rd = lambda xs: [round(x, 3) for x in xs]  # noqa: E731
        return {"b_by_depth": rd(self.b_mean), "b_upper": rd(self.b_upper), "c": round(self.c, 3),
                "v": round(self.v, 3), "r": rd(self.r), "predicted": rd(self.expected),
                "predicted_upper": rd(self.speedup), "probe_cost": round(self.probe_cost, 3),
                "sources": dict(self.sources)}


def _get(d: dict, key: str, default):
    v = d.get(key)
    return default if v is None else v


def _at(xs: list, i: int, default=0):
    return xs[i] if i < len(xs) else default


class Beliefs:
    """Per-depth Beta posteriors on b_d with a shared prior, over two memories of the verdicts:
    a long one (`decay`) that the estimate normally rests on, and a short one (`fast_decay`,
    the last few observed cycles) that takes over while the two disagree by more than `alarm`
    of its standard deviations: steady acceptance is estimated from many verdicts, a change
    is followed within a few."""

    def __init__(self, depths: int, decay: float, fast_decay: float, shared_weight: float,
                 alarm: float = 2.0) -> None:
        self.acc = {decay: [0.0] * depths, fast_decay: [0.0] * depths}
        self.ver = {decay: [0.0] * depths, fast_decay: [0.0] * depths}
        self.slow, self.fast, self.k, self.alarm = decay, fast_decay, shared_weight, alarm

    def fade(self) -> None:
        """Older evidence loses weight: once per cycle that brought new verdicts."""
        for decay in self.acc:
            self.acc[decay] = [a * decay for a in self.acc[decay]]
            self.ver[decay] = [n * decay for n in self.ver[decay]]

    def add(self, depth: int, accepted: bool, weight: float = 1.0) -> None:
        for decay in self.acc:
            d = min(depth, len(self.ver[decay]) - 1)  # deeper verdicts inform the deepest belief
            self.acc[decay][d] += weight * accepted
            self.ver[decay][d] += weight

    def _pool(self, decay: float) -> tuple[float, float]:
        """Beta parameters of the pooled rate m (Jeffreys: 1/2, 1/2 with no evidence)."""
        a, n = sum(self.acc[decay]), sum(self.ver[decay])
        return a + 0.5, n - a + 0.5

    def memory(self) -> float:
        """The decay whose counts describe acceptance now: the short memory while its pooled
        rate is more than `alarm` standard deviations from the long one's."""
        (fa, fb), (sa, sb) = self._pool(self.fast), self._pool(self.slow)
        m_fast, m_slow = fa / (fa + fb), sa / (sa + sb)
        sd_fast = math.sqrt(fa * fb / ((fa + fb) ** 2 * (fa + fb + 1.0)))
        return self.fast if abs(m_fast - m_slow) > self.alarm * sd_fast else self.slow

    def upper(self, z: float, z_alarm: float | None = None) -> list[float]:
        """Each depth's posterior mean plus z standard deviations (z = 0: the mean); `z_alarm`
        instead while the short memory has taken over (a change is under way: look at it)."""
        decay = self.memory()
        if decay == self.fast and z_alarm is not None:
            z = z_alarm
        pa, pb = self._pool(decay)
        m = pa / (pa + pb)
        out = []
        for a, n in zip(self.acc[decay], self.ver[decay]):
            al, be = a + self.k * m, n - a + self.k * (1.0 - m)
            sd = math.sqrt(al * be / ((al + be) ** 2 * (al + be + 1.0)))
            out.append(min(1.0, al / (al + be) + z * sd))
        return out


class Ledger:
    """What each kind of cycle cost, from the growth of the Stats between two decisions:
    "plain" (g = 0), "probe", "draft" (g > 0). Sums decay like the verdicts do. The undecayed
    sums go into Stats.cycle_costs, so the prior carries them to the next request: a request of a
    few cycles then spaces its probes by what probes were measured to cost, instead of probing
    every other cycle until it has timed both kinds itself."""

    FIELDS = ("wall_s", "tokens", "draft_s", "draft_calls", "t1_s", "t1_calls")

    def __init__(self, decay: float, prior: dict | None = None, prior_cycles: float = 4.0) -> None:
        self.decay = decay
        self.sums: dict[str, dict[str, float]] = {}
        for kind, sums in (prior or {}).items():  # each kind weighs at most `prior_cycles` cycles
            n = sums.get("cycles", 0.0)
            if n > 0 and sums.get("tokens", 0.0) > 0:
                scale = min(1.0, prior_cycles / n)
                self.sums[kind] = {k: scale * sums.get(k, 0.0) for k in self.FIELDS}
        self._mark: dict[str, float] | None = None
        self._kind: str | None = None

    @staticmethod
    def _read(st: Stats) -> dict[str, float]:
        return {"wall_s": st.wall_s, "tokens": st.tokens, "draft_s": st.draft_s, "draft_calls": st.draft_calls,
                "t1_s": _at(st.target_s_by_rows, 0, 0.0), "t1_calls": _at(st.target_calls_by_rows, 0)}

    def close(self, st: Stats) -> None:
        """Record the cycle that just ended (if it emitted anything) under its kind."""
        now = self._read(st)
        if self._mark is not None and self._kind is not None and now["tokens"] > self._mark["tokens"]:
            s = self.sums.setdefault(self._kind, dict.fromkeys(self.FIELDS, 0.0))
            total = st.cycle_costs.setdefault(self._kind, dict.fromkeys(("cycles", *self.FIELDS), 0.0))
            total["cycles"] += 1
            for k in self.FIELDS:
                s[k] = s[k] * self.decay + (now[k] - self._mark[k])
                total[k] += now[k] - self._mark[k]
        self._mark, self._kind = now, None

    def open(self, kind: str) -> None:
        self._kind = kind

    def per_token(self, kind: str, secs: str = "wall_s") -> float | None:
        s = self.sums.get(kind)
        return s[secs] / s["tokens"] if s and s["tokens"] and s[secs] > 0 else None

    def mean(self, kind: str, secs: str, calls: str) -> float | None:
        s = self.sums.get(kind)
        return s[secs] / s[calls] if s and s[calls] else None


class SpeculationPolicy:
    def __init__(self, max_depth: int = 6, prior: dict | None = None, *, schedule: str = "sync",
                 optimism: float = 0.25, alarm_optimism: float = 1.0, decay: float = 0.95,
                 fast_decay: float = 0.7, shared_weight: float = 2.0, prior_verdicts: float = 8.0, prior_calls: float = 4.0, batch_slope: float = 0.15,
                 draft_cost: float = 0.3, probe_budget: float = 0.03, min_probe_every: int = 1,
                 max_probe_every: int = 16, shared_device: bool | None = None) -> None:
        """`optimism`: standard deviations above each b_d's mean that depths are chosen on
        (`alarm_optimism` while the short memory has taken over: a change is worth a look);
        `decay` / `fast_decay`: weight the long and the short memory keep of older verdicts per
        observed cycle; `shared_weight`: pseudo-verdicts of the shared prior in each depth's
        posterior; `prior_verdicts` / `prior_calls`: the most the prior may weigh; `batch_slope`
        and `draft_cost`: s and c before anything is measured; `probe_budget`: the share of time
        probes may cost at g = 0. `shared_device`: the deployment puts the draft on the target's
        device (None: judged from probes, see Contention). `load` (set before each decision): the
        answers the target is writing now, this one included."""
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {max_depth}")
        if schedule not in ("sync", "async"):
            raise ValueError(f"schedule must be 'sync' or 'async', got {schedule!r}")
        self.max_depth, self.schedule = max_depth, schedule
        self.prior = prior or {}
        self.prior_verdicts, self.prior_calls = prior_verdicts, prior_calls
        self.batch_slope, self.draft_cost = batch_slope, draft_cost
        self.probe_budget = probe_budget
        self.shared_device, self.load = shared_device, 1
        self.min_probe_every, self.max_probe_every = min_probe_every, max_probe_every
        self.optimism, self.alarm_optimism = optimism, alarm_optimism
        self.beliefs = Beliefs(max_depth, decay, fast_decay, shared_weight)
        # cycle costs: about the last 10 of each kind, the prior's counting as at most prior_calls
        self.ledger = Ledger(0.9, _get(self.prior, "cycle_costs", {}), prior_calls)
        self._seen_acc: list[int] = []  # the Stats' verdict counts already in the beliefs
        self._seen_ver: list[int] = []
        self._seed_prior()
        # g = 0 cycles since the last probe or drafting cycle; None until the first g = 0 decision
        self._idle: int | None = None
        self._last: int | None = None  # depth of the last logged decision (-1: a probe)

    # -- evidence -------------------------------------------------------------------------
    def _seed_prior(self) -> None:
        """The prior's verdicts start the posteriors, scaled so depth 0 holds at most
        `prior_verdicts` of them (a request unlike the history soon follows its own)."""
        acc = list(_get(self.prior, "accepted_by_depth", []))
        ver = list(_get(self.prior, "verified_by_depth", []))
        if not ver or not ver[0]:
            return
        scale = min(1.0, self.prior_verdicts / ver[0])
        for d in range(len(ver)):
            b = self.beliefs
            for decay in b.acc:
                i = min(d, len(b.ver[decay]) - 1)
                b.acc[decay][i] += scale * _at(acc, d)
                b.ver[decay][i] += scale * ver[d]

    def observe(self, st: Stats) -> None:
        """Feed the verdicts the Stats gained since the last call into the beliefs, after fading
        the older ones: evidence decays per cycle that was observed, whatever its depth."""
        if sum(st.verified_by_depth) > sum(self._seen_ver):
            self.beliefs.fade()
        for d, n in enumerate(st.verified_by_depth):
            a = _at(st.accepted_by_depth, d)
            new_a, new_n = a - _at(self._seen_acc, d), n - _at(self._seen_ver, d)
            for i in range(new_n):
                self.beliefs.add(d, i < new_a)
        self._seen_acc, self._seen_ver = list(st.accepted_by_depth), list(st.verified_by_depth)

    # -- costs ----------------------------------------------------------------------------
    def _mean(self, st_s: float, st_n: float, p_s: float, p_n: float) -> tuple[float | None, str]:
        w = min(p_n, self.prior_calls)
        pm = p_s / p_n if p_n else 0.0
        n = st_n + w
        if not n:
            return None, "default"
        return (st_s + w * pm) / n, "run" if st_n else "prior"

    def _target_times(self, st: Stats) -> dict[int, tuple[float, float, float]]:
        """n -> (mean seconds per call, the same per token of a row, weight) over session and
        prior; per token is 0 where tokens were not recorded."""
        p_calls = list(_get(self.prior, "target_calls_by_rows", []))
        p_secs = list(_get(self.prior, "target_s_by_rows", []))
        p_toks = list(_get(self.prior, "target_tokens_by_rows", []))
        out = {}
        for i in range(max(len(st.target_calls_by_rows), len(p_calls))):
            s_n, p_n = _at(st.target_calls_by_rows, i), _at(p_calls, i)
            s_s, p_s = _at(st.target_s_by_rows, i, 0.0), _at(p_secs, i, 0.0)
            mean, _ = self._mean(s_s, s_n, p_s, p_n)
            if mean is None or mean <= 0:
                continue
            s_t, p_t = _at(st.target_tokens_by_rows, i, 0.0), _at(p_toks, i, 0.0)
            w = min(p_n, self.prior_calls) / p_n if p_n else 0.0  # the prior's share, as in _mean
            toks = s_t + w * p_t
            per_token = (s_s + w * p_s) / toks if toks > 0 and (s_t or not s_n) and (p_t or not p_n) else 0.0
            out[i + 1] = (mean, per_token, s_n + min(p_n, self.prior_calls))
        return out

    def _batch_ratios(self, times: dict[int, tuple[float, float, float]],
                      sources: dict) -> tuple[float | None, list[float]]:
        """T(1) and r(n) for n = 1 .. max_depth + 1 (the async window has at most max_depth + 1
        target rows of its own in flight). r(n) compares seconds per token where tokens were
        recorded (steps differ in length, and which calls ran with n rows is no random pick)."""
        s = self.batch_slope
        sources["r"] = "default slope"
        ratio = {}
        if 1 in times:
            t1, rate1, _ = times[1]
            for n, (m, rate, w) in times.items():
                ratio[n] = (rate / rate1 if rate and rate1 else m / t1, w)
            wider = [(n, q, w) for n, (q, w) in ratio.items() if n > 1]
            if wider:  # slope fitted from the measured batches, one pseudo-call of the default
                fit = sum(w * max(0.0, (q - 1.0) / (n - 1)) for n, q, w in wider)
                s = (fit + s) / (sum(w for _, _, w in wider) + 1.0)
                sources["r"] = "run"
        elif times:  # no single-row call yet: T(1) from the widest-measured batch and the slope
            n, (m, _, _) = max(times.items(), key=lambda kv: kv[1][2])
            t1 = m / (1.0 + s * (n - 1))
        else:
            return None, [1.0 + s * n for n in range(self.max_depth + 1)]
        r = [1.0]
        for n in range(2, self.max_depth + 2):
            line = 1.0 + s * (n - 1)
            if n in ratio:  # a measured batch counts, one pseudo-call of the line
                q, w = ratio[n]
                line = (w * q + line) / (w + 1.0)
            r.append(max(1.0, line))
        return t1, r

    def _draft_seconds(self, st: Stats, sources: dict) -> float | None:
        """D as a cycle of this schedule pays it. The async window's drafts always run beside
        target steps, as probes do. A sync cycle drafts alone: where probes show that their draft
        slowed the target step beside it (shared cores), the draft was slowed by about as much, so
        D alone = D beside - the target's extra seconds, until drafting cycles time it alone."""
        d_all, sources["c"] = self._mean(st.draft_s, st.draft_calls, _get(self.prior, "draft_s", 0.0),
                                         _get(self.prior, "draft_calls", 0))
        extra = self._contention()
        if (self.schedule == "async" and not extra) or d_all is None or not extra:
            return d_all  # no contention seen: drafts cost the same beside a target step or alone
        alone = self.ledger.mean("draft", "draft_s", "draft_calls") if self.schedule == "sync" else None
        if alone is not None:
            sources["c"] = "drafting cycles"
            return alone
        beside = self.ledger.mean("probe", "draft_s", "draft_calls") or d_all
        sources["c"] = "probes, contention removed"
        return max(beside / 2.0, beside - extra)

    def _contention(self) -> float:
        """Seconds a probe's draft added to the target step beside it (0 when under 5%): draft
        and target share their cores. Compared per token: steps differ in length, and with one
        cycle of each kind timed a longer probe step is no evidence of anything."""
        probe, plain = self.ledger.per_token("probe", "t1_s"), self.ledger.per_token("plain", "t1_s")
        if probe is None or plain is None or probe < 1.05 * plain:
            return 0.0
        return (probe - plain) * self.ledger.mean("probe", "tokens", "t1_calls")

    def _shared(self) -> bool:
        return self.shared_device if self.shared_device is not None else self._contention() > 0

    def _probe_cost(self, c: float, v: float, load: int) -> float:
        """A probe cycle's extra wall time per token over a plain g = 0 cycle's, times the answers
        it holds back (Load); before both were measured, the draft is assumed to run on its own
        device (cost: the verification). On a device the deployment says is shared, at least a
        draft step: under load the answer that probes sees only its share of what its probe costs,
        and its plain cycles are slowed by the others' probes as much as its probe cycles are."""
        probe, plain = self.ledger.per_token("probe"), self.ledger.per_token("plain")
        cost = v + max(0.0, c - 1.0) if probe is None or plain is None else max(0.0, probe / plain - 1.0)
        if self.shared_device:
            cost = max(cost, c + v)
        return cost * load

    def _predict(self, b: list[float], g: int, c: float, r: list[float], v: float, shared: bool) -> float:
        # where draft and target share their cores, drafting beside the target saves nothing:
        # the async window then pays for its drafts as a sync cycle does
        if self.schedule == "async" and not shared:
            return async_speedup(b, g, c, r, v)
        return cycle_speedup(b, g, c, r[g], v)

    def estimate(self, st: Stats) -> Estimate:
        self.observe(st)
        sources: dict = {}
        t1, r = self._batch_ratios(self._target_times(st), sources)
        d = self._draft_seconds(st, sources)
        v_mean, sources["v"] = self._mean(st.verify_s, st.verify_calls, _get(self.prior, "verify_s", 0.0),
                                          _get(self.prior, "verify_calls", 0))
        c = d / t1 if t1 and d is not None else self.draft_cost
        v = v_mean / t1 if t1 and v_mean is not None else 0.0
        means, upper = self.beliefs.upper(0.0), self.beliefs.upper(self.optimism, self.alarm_optimism)
        gs, shared = range(self.max_depth + 1), self._shared()
        # the answers a draft step takes device time from: all the target is writing where draft
        # and target share the device, none but this one's where each has its own
        load = max(1, self.load) if shared else 1
        if shared:
            sources["schedule"] = "shared cores: async costed as sync" if self.schedule == "async" else "shared cores"
        if load > 1:
            sources["load"] = f"draft costed for {load} answers on the device"
        cl = c * load  # a draft step on a shared device holds back every answer the target writes
        perfect = [1.0] * self.max_depth
        return Estimate(means, upper, c, v, r, [self._predict(upper, g, cl, r, v, shared) for g in gs],
                        [self._predict(means, g, cl, r, v, shared) for g in gs], self._probe_cost(c, v, load),
                        max(self._predict(perfect, g, cl, r, v, shared) for g in gs[1:]), load,
                        timed=bool(t1) and d is not None, sources=sources)

    # -- decisions ------------------------------------------------------------------------
    def probe_every(self, est: Estimate) -> int:
        """Cycles between probes while g = 0: probe cost / k within the budget. Until a plain
        cycle has been timed, every other one is plain, so that the probes' cost can be measured."""
        k = math.ceil(est.probe_cost / self.probe_budget) if self.probe_budget > 0 else self.max_probe_every
        if self.ledger.per_token("plain") is None:
            k = max(k, 2)
        # under load the interval stretches with the probe's cost: the replica, not each answer,
        # probes about once in max_probe_every cycles of the target's
        return max(self.min_probe_every, min(self.max_probe_every * est.load, k))

    def decide(self, st: Stats) -> Decision:
        self.ledger.close(st)
        est = self.estimate(st)
        if not est.timed:
            return self._done(st, est, Decision(0, True, "probe: no timings yet"))
        if self.schedule == "async":
            # The window drafts beside target steps. Whether that slows the target (cores or a
            # memory bus shared) shows only in a target step timed with a probe's draft beside it
            # against one timed alone; until both were (here or in the prior), the window would be
            # costed as if its drafts were free. Time the missing one first.
            if self.ledger.per_token("probe", "t1_s") is None:
                return self._done(st, est, Decision(0, True, "probe: drafting beside the target not timed yet"))
            if self.ledger.per_token("plain", "t1_s") is None:
                return self._done(st, est, Decision(0, False, "g=0: the target alone not timed yet"))
        best = max(range(self.max_depth + 1), key=lambda g: (est.speedup[g], -g))
        if best > 0:
            why = f"{est.speedup[best]:.2f}x at the bound, expected {est.expected[best]:.2f}x ({_head(est, best)})"
            return self._done(st, est, Decision(best, False, f"g={best}: {why}"))
        if est.ceiling <= 1.0:
            # not even a drafter that is always right would pay at these costs: a probe could
            # only confirm that (under load on a shared device, c N alone can exceed a step)
            return self._done(st, est, Decision(0, False, f"g=0: no depth pays even with every draft accepted "
                                                          f"(at most {est.ceiling:.2f}x; {_head(est, 1)})"))
        every = self.probe_every(est)
        if self._idle is None:
            # the cadence goes on across requests: a request starts where the history's cycle
            # count puts it, so requests shorter than the interval still probe once in `every`
            # cycles between them (all starting at 0, none would ever reach it)
            self._idle = int(_get(self.prior, "cycles", 0)) % every
        self._idle += 1
        g1 = max(range(1, self.max_depth + 1), key=lambda g: est.expected[g])
        why = f"best g={g1} expected {est.expected[g1]:.2f}x ({_head(est, g1)}; probe cost {est.probe_cost:.2f})"
        if self._idle >= every:
            return self._done(st, est, Decision(0, True, f"probe (every {every} cycles at g=0): {why}"))
        return self._done(st, est, Decision(0, False, f"g=0: {why}"))

    def _done(self, st: Stats, est: Estimate, d: Decision) -> Decision:
        if d.depth or d.probe:
            self._idle = 0
        self.ledger.open("draft" if d.depth else "probe" if d.probe else "plain")
        st.policy = {"depth": d.depth, "probe": d.probe, "reason": d.reason, **est.to_dict()}
        # the log gets the first decision and each change of depth; routine probes stay out of it
        if self._last is None or (not d.probe and d.depth != self._last):
            self._last = -1 if d.probe else d.depth
            st.policy_log = (st.policy_log + [f"cycle {st.cycles}: {d.reason}"])[-20:]
        return d


def _head(est: Estimate, g: int) -> str:
    return (f"b0={est.b_mean[0]:.2f} (bound {est.b_upper[0]:.2f}) c={est.c:.2f} v={est.v:.2f} "
            f"r{g + 1}={est.r[g]:.2f}")


class PriorBook:
    """Running totals of finished requests, one per key (model pair, verifier, greedy or
    sampled, schedule): each new request's policy starts from the totals of its own kind, not
    from a pool of every request the replica served."""

    def __init__(self) -> None:
        self._totals: dict[tuple, Stats] = {}

    @staticmethod
    def key(target: str, draft: str, verifier: str, greedy: bool, schedule: str = "sync", mode: str = "lr") -> tuple:
        return (mode, target, draft, verifier, "greedy" if greedy else "sampled", schedule)

    def get(self, key: tuple) -> dict | None:
        st = self._totals.get(key)
        return st.to_dict() if st is not None else None

    def add(self, key: tuple, st: Stats) -> None:
        self._totals.setdefault(key, Stats(mode=key[0])).accumulate(st)
