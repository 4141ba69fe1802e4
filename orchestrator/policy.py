"""Adaptive speculation depth (`depth: "auto"`): before each cycle, pick the depth g in
0..max_depth that the cost model (orchestrator/cost_model.py) predicts to be fastest.

Everything is estimated from the request's own live measurements (its Stats), blended with an
optional prior: a plain dict shaped like `Stats.to_dict()` (one earlier request's, or a server's
running totals), scaled down so the session's own numbers take over after a few cycles.

- b_d, acceptance at depth d given every shallower draft was accepted: accepted/verified at d,
  shrunk towards the pooled acceptance of all depths (depths never reached use the pool). The
  prior's verdicts count as at most `prior_verdicts` at depth 0, shrinking as the session's
  own verdicts come in. Depths are chosen on a lower bound, b_d minus `caution` standard
  errors of the evidence behind it: one accepted probe makes b_0 = 0.83 but only 0.60 at the
  bound, so a single lucky verdict does not buy a batch (measured: on the Qwen2.5 0.5B -> 1.5B
  pair it did, the draft was rejected, and that cycle cost more than the probes saved).
- T(n), seconds of a target call of n rows: the measured mean per n, smoothed towards a line
  T(1) * (1 + s (n - 1)) whose slope s is fitted from the measured n > 1 (a prior slope until
  one is measured). r(n) = T(n) / T(1). Under load a batch stops being free and the measured
  T(n) grows, so the same rule picks smaller g.
- c = seconds per draft call / T(1); v = seconds per verification call / T(1).

Speculation pays when some g > 0 predicts more than 1 + min_gain. While g = 0, a *probe*
every k cycles drafts one step beside the plain target step (one draft call and one
verification, no extra target rows), so b stays known at about (c + v) / k overhead; k is
chosen to keep that under `probe_budget` and doubles after each rejected probe in a row.
The first cycle of a request with no timings at all is a probe: it measures D, T(1), V and b_0
at the cost of one draft step and one verification.

Pure: no I/O, no clock; the session calls `decide(stats)` once per cycle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from orchestrator.cost_model import cycle_speedup
from orchestrator.types import Stats

AUTO = "auto"


@dataclass
class Decision:
    depth: int  # g for this cycle
    probe: bool  # g == 0 plus one drafted step checked against the target's own step
    reason: str


@dataclass
class Estimate:
    b_by_depth: list[float]  # b_0 .. b_(max_depth-1)
    b_low: list[float]  # the lower bound the depth is chosen on
    c: float
    v: float
    r: list[float]  # r[n-1] for n = 1 .. max_depth + 1
    speedup: list[float]  # predicted speedup by g = 0 .. max_depth, at the lower bound b_low
    timed: bool  # target and draft timings exist (measured here or in the prior)
    sources: dict = field(default_factory=dict)  # where each cost came from: "run", "prior", "default"

    def to_dict(self) -> dict:
        rd = lambda xs: [round(x, 3) for x in xs]  # noqa: E731
        return {"b_by_depth": rd(self.b_by_depth), "b_low": rd(self.b_low),
                "c": round(self.c, 3), "v": round(self.v, 3),
                "r": rd(self.r), "predicted": rd(self.speedup), "sources": dict(self.sources)}


def _get(d: dict, key: str, default):
    v = d.get(key)
    return default if v is None else v


class SpeculationPolicy:
    def __init__(self, max_depth: int = 6, prior: dict | None = None, *, prior_verdicts: float = 8.0,
                 prior_calls: float = 4.0, batch_slope: float = 0.15, draft_cost: float = 0.3,
                 min_gain: float = 0.03, probe_budget: float = 0.03, min_probe_every: int = 4,
                 max_probe_every: int = 64, caution: float = 1.0) -> None:
        """`prior_verdicts` / `prior_calls`: the most the prior may weigh, in verdicts per depth
        and in calls per timing; `batch_slope` and `draft_cost` are the defaults for s and c
        before anything is measured; `caution`: standard errors between b_d and the bound the
        depth is chosen on (0: choose on the estimate itself)."""
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {max_depth}")
        self.max_depth = max_depth
        self.prior = prior or {}
        self.prior_verdicts, self.prior_calls = prior_verdicts, prior_calls
        self.batch_slope, self.draft_cost = batch_slope, draft_cost
        self.min_gain, self.probe_budget = min_gain, probe_budget
        self.min_probe_every, self.max_probe_every = min_probe_every, max_probe_every
        self.caution = caution
        self._idle = 0  # g = 0 cycles since the last drafting cycle
        self._rejected_probes = 0  # rejected probes in a row
        self._probe_mark: tuple[int, int] | None = None  # depth-0 (accepted, verified) when the last probe ran
        self._last: int | None = None  # depth of the last logged decision (-1: a probe)

    # -- estimates ------------------------------------------------------------------------
    def acceptance(self, st: Stats) -> tuple[list[float], list[float]]:
        """(b_d, its lower bound) for d = 0 .. max_depth - 1. The bench reports its cost model
        on the same bound, from a run's summed verdicts."""
        p_acc = list(_get(self.prior, "accepted_by_depth", []))
        p_ver = list(_get(self.prior, "verified_by_depth", []))
        # the prior weighs at most prior_verdicts at depth 0, less as this session's own verdicts
        # come in: a request unlike the server's history soon follows its own numbers
        own = sum(st.verified_by_depth)
        cap = self.prior_verdicts * self.prior_verdicts / (self.prior_verdicts + own)
        scale = min(1.0, cap / max(p_ver[:1] or [1])) if p_ver else 0.0
        acc, ver = [], []
        for d in range(self.max_depth):
            a = (st.accepted_by_depth[d] if d < len(st.accepted_by_depth) else 0)
            n = (st.verified_by_depth[d] if d < len(st.verified_by_depth) else 0)
            a += scale * (p_acc[d] if d < len(p_acc) else 0)
            n += scale * (p_ver[d] if d < len(p_ver) else 0)
            acc.append(a)
            ver.append(n)
        total = sum(ver)
        pooled = (sum(acc) + 0.5) / (total + 1.0)  # Jeffreys prior: 0.5 with no data
        k = 2.0  # pseudo-verdicts pulling each depth towards the pool
        b = [min(1.0, max(0.0, (a + k * pooled) / (n + k))) for a, n in zip(acc, ver)]
        # the pool's pseudo-verdicts are worth only as much as the pool has seen: with nothing
        # seen the bound is 0, after one accepted verdict b_0 = 0.83 has a bound of 0.60
        pool_weight = k * total / (total + k)
        low = [max(0.0, bd - self.caution * math.sqrt(bd * (1.0 - bd) / (n + pool_weight + 1.0)))
               for bd, n in zip(b, ver)]
        return b, low

    def _mean(self, st_s: float, st_n: float, p_s: float, p_n: float) -> tuple[float | None, str]:
        w = min(p_n, self.prior_calls)
        pm = p_s / p_n if p_n else 0.0
        n = st_n + w
        if not n:
            return None, "default"
        return (st_s + w * pm) / n, "run" if st_n else "prior"

    def _target_times(self, st: Stats) -> dict[int, tuple[float, float]]:
        """n -> (mean seconds, weight) over session and prior."""
        p_calls = list(_get(self.prior, "target_calls_by_rows", []))
        p_secs = list(_get(self.prior, "target_s_by_rows", []))
        out = {}
        for i in range(max(len(st.target_calls_by_rows), len(p_calls))):
            s_n = st.target_calls_by_rows[i] if i < len(st.target_calls_by_rows) else 0
            s_s = st.target_s_by_rows[i] if i < len(st.target_s_by_rows) else 0.0
            p_n = p_calls[i] if i < len(p_calls) else 0
            p_s = p_secs[i] if i < len(p_secs) else 0.0
            mean, _ = self._mean(s_s, s_n, p_s, p_n)
            if mean is not None and mean > 0:
                out[i + 1] = (mean, s_n + min(p_n, self.prior_calls))
        return out

    def estimate(self, st: Stats) -> Estimate:
        b, b_low = self.acceptance(st)
        sources: dict = {}
        times = self._target_times(st)
        s = self.batch_slope
        if 1 in times:
            t1 = times[1][0]
            wider = [(n, m, w) for n, (m, w) in times.items() if n > 1]
            if wider:  # slope fitted from the measured batches, one pseudo-call of the default
                fit = sum(w * max(0.0, (m / t1 - 1.0) / (n - 1)) for n, m, w in wider)
                s = (fit + s) / (sum(w for _, _, w in wider) + 1.0)
                sources["r"] = "run"
            else:
                sources["r"] = "default slope"
        elif times:  # no single-row call yet: T(1) from the widest-measured batch and the slope
            n, (m, _) = max(times.items(), key=lambda kv: kv[1][1])
            t1 = m / (1.0 + s * (n - 1))
            sources["r"] = "default slope"
        else:
            t1 = None
            sources["r"] = "default slope"
        r = []
        for n in range(1, self.max_depth + 2):
            line = 1.0 + s * (n - 1)
            if t1 and n in times and n > 1:  # a measured batch counts, one pseudo-call of the line
                m, w = times[n]
                line = (w * m / t1 + line) / (w + 1.0)
            r.append(max(1.0, line) if n > 1 else 1.0)
        d_mean, sources["c"] = self._mean(st.draft_s, st.draft_calls, _get(self.prior, "draft_s", 0.0),
                                          _get(self.prior, "draft_calls", 0))
        v_mean, sources["v"] = self._mean(st.verify_s, st.verify_calls, _get(self.prior, "verify_s", 0.0),
                                          _get(self.prior, "verify_calls", 0))
        c = d_mean / t1 if t1 and d_mean is not None else self.draft_cost
        v = v_mean / t1 if t1 and v_mean is not None else 0.0
        speedup = [cycle_speedup(b_low, g, c, r[g], v) for g in range(self.max_depth + 1)]
        return Estimate(b, b_low, c, v, r, speedup, timed=bool(t1) and d_mean is not None, sources=sources)

    # -- decisions ------------------------------------------------------------------------
    def probe_every(self, est: Estimate) -> int:
        """Cycles between probes while g = 0: overhead (c + v) / k within the budget, doubled per
        rejected probe in a row."""
        k = math.ceil((est.c + est.v) / self.probe_budget) if self.probe_budget > 0 else self.max_probe_every
        k *= 2 ** min(self._rejected_probes, 6)
        return max(self.min_probe_every, min(self.max_probe_every, k))

    def decide(self, st: Stats) -> Decision:
        self._note_probe_outcome(st)
        est = self.estimate(st)
        if not est.timed:
            return self._done(st, est, Decision(0, True, "probe: no timings yet"))
        best = max(range(self.max_depth + 1), key=lambda g: (est.speedup[g], -g))
        head = f"b0={est.b_by_depth[0]:.2f} (bound {est.b_low[0]:.2f}) c={est.c:.2f} v={est.v:.2f}"
        if best > 0 and est.speedup[best] >= 1.0 + self.min_gain:
            self._idle = 0
            return self._done(st, est, Decision(best, False, f"g={best}: predicts {est.speedup[best]:.2f}x "
                                                             f"({head} r{best + 1}={est.r[best]:.2f})"))
        self._idle += 1
        every = self.probe_every(est)
        g1 = max(range(1, self.max_depth + 1), key=lambda g: est.speedup[g])
        why = f"best g={g1} predicts {est.speedup[g1]:.2f}x ({head} r{g1 + 1}={est.r[g1]:.2f})"
        if self._idle >= every:
            self._idle = 0
            return self._done(st, est, Decision(0, True, f"probe (every {every} cycles at g=0): {why}"))
        return self._done(st, est, Decision(0, False, f"g=0: {why}"))

    def _note_probe_outcome(self, st: Stats) -> None:
        if self._probe_mark is None:
            return
        acc0 = st.accepted_by_depth[0] if st.accepted_by_depth else 0
        ver0 = st.verified_by_depth[0] if st.verified_by_depth else 0
        if ver0 > self._probe_mark[1]:  # the probe was ruled on (not skipped by a failure)
            self._rejected_probes = 0 if acc0 > self._probe_mark[0] else self._rejected_probes + 1
        self._probe_mark = None

    def _done(self, st: Stats, est: Estimate, d: Decision) -> Decision:
        if d.probe:
            self._probe_mark = (st.accepted_by_depth[0] if st.accepted_by_depth else 0,
                                st.verified_by_depth[0] if st.verified_by_depth else 0)
        st.policy = {"depth": d.depth, "probe": d.probe, "reason": d.reason, **est.to_dict()}
        # the log gets the first decision and each change of depth; routine probes stay out of it
        if self._last is None or (not d.probe and d.depth != self._last):
            self._last = -1 if d.probe else d.depth
            st.policy_log = (st.policy_log + [f"cycle {st.cycles}: {d.reason}"])[-20:]
        return d
