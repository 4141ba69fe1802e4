"""Per-configuration summary of a run's records: accuracy, latency, speed, acceptance, time
split and (for lr configurations) the cost model's prediction next to the realized speedup."""
from __future__ import annotations

from benchmarks.bench.calibrate import Calibration
from benchmarks.cost_model import lr_inputs
from benchmarks.bench.modes import ModeSpec
from orchestrator.policy import SpeculationPolicy
from orchestrator.types import Stats

_SUMMED = ("draft_s", "target_s", "verify_s", "wall_s", "cycles", "drafted_steps", "verified_steps",
           "accepted_steps", "target_steps", "target_tokens")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def totals(records: list[dict]) -> dict:
    """Stats summed over questions, plus emitted steps and draft tokens generated."""
    out = {k: sum(r["stats"][k] for r in records) for k in _SUMMED}
    out["steps"] = sum(r["steps"] for r in records)
    out["tokens"] = sum(r["tokens"] for r in records)
    out["draft_tokens_generated"] = sum((r["draft_meter"] or {}).get("tokens", 0) for r in records)
    out["target_calls"] = sum((r["target_meter"] or {}).get("calls", 0) for r in records)
    out["target_rows"] = sum((r["target_meter"] or {}).get("rows", 0) for r in records)
    width = max((len(r["stats"]["verified_by_depth"]) for r in records), default=0)
    out["verified_by_depth"] = [sum(_at(r["stats"]["verified_by_depth"], d) for r in records) for d in range(width)]
    out["accepted_by_depth"] = [sum(_at(r["stats"]["accepted_by_depth"], d) for r in records) for d in range(width)]
    return out


def _at(xs: list[int], i: int) -> int:
    return xs[i] if i < len(xs) else 0


def summarize_mode(records: list[dict]) -> dict:
    lat = [r["latency_s"] for r in records]
    t = totals(records)
    n = len(records)
    total_latency = sum(lat)
    return {
        "n": n,
        "accuracy": round(sum(r["correct"] for r in records) / n, 4) if n else 0.0,
        "correct": sum(r["correct"] for r in records),
        "latency": {"mean_s": round(total_latency / n, 4) if n else 0.0,
                    "p50_s": round(percentile(lat, 50), 4), "p90_s": round(percentile(lat, 90), 4)},
        "tokens": t["tokens"],
        "tokens_per_s": round(t["tokens"] / total_latency, 4) if total_latency else 0.0,
        "steps": t["steps"],
        "acceptance": {
            "rate": round(t["accepted_steps"] / t["verified_steps"], 4) if t["verified_steps"] else None,
            "verified": t["verified_steps"], "accepted": t["accepted_steps"],
            "by_depth": [round(a / v, 4) if v else None for a, v in zip(t["accepted_by_depth"], t["verified_by_depth"])],
            "verified_by_depth": t["verified_by_depth"], "accepted_by_depth": t["accepted_by_depth"],
        },
        "time": {k: round(t[k], 3) for k in ("draft_s", "target_s", "verify_s", "wall_s")},
        "totals": t,
    }


def agreement_with_ar(records: list[dict], ar_records: list[dict]) -> dict:
    """How often this mode's answer is ar's: the same text, and the same final number (the
    quality that matters when a semantic verifier lets the wording drift)."""
    ar = {r["question"]: r for r in ar_records}
    pairs = [(r, ar[r["question"]]) for r in records if r["question"] in ar]
    if not pairs:
        return {"same_text_as_ar": None, "same_answer_as_ar": None}
    same_text = sum(r["text"] == a["text"] for r, a in pairs)
    same_answer = sum(r["predicted"] is not None and a["predicted"] is not None
                      and abs(r["predicted"] - a["predicted"]) <= 1e-6 * max(1.0, abs(a["predicted"]))
                      for r, a in pairs)
    return {"same_text_as_ar": round(same_text / len(pairs), 4),
            "same_answer_as_ar": round(same_answer / len(pairs), 4), "same_answer_count": same_answer,
            "compared_with_ar": len(pairs)}


def strict_totals(records: list[dict]) -> dict:
    """Accepted drafts the answers used, and how many equality / the numeric guard would have rejected."""
    reviews = [r.get("strict") or {} for r in records]
    out = {k: sum(x.get(k, 0) for x in reviews) for k in ("accepted_drafts", "not_equal", "guard_rejects", "unmatched")}
    out["examples"] = [e for x in reviews for e in x.get("examples", [])][:5]
    return out


def summarize(records: list[dict], specs: list[ModeSpec], calib: Calibration | None, schedule: str,
              ar_reference: list[dict] | None = None) -> dict:
    """{name: summary} for each spec, with speedups over `ar` (ratio of mean latencies in this
    run), the lr time split and the cost model. Without ar in this run, `ar_reference` (an
    earlier run's ar records, `--ar-from`) still gives the same-answer rates."""
    by_mode = {s.name: [r for r in records if r["mode"] == s.name] for s in specs}
    out = {s.name: summarize_mode(by_mode[s.name]) for s in specs}
    ar = out.get("ar")
    for s in specs:
        m = out[s.name]
        m["speedup_vs_ar"] = (round(ar["latency"]["mean_s"] / m["latency"]["mean_s"], 4)
                              if ar and m["latency"]["mean_s"] else None)
        if ar and s.name != "ar":
            m.update(agreement_with_ar(by_mode[s.name], by_mode["ar"]))
        elif ar_reference:
            m.update(agreement_with_ar(by_mode[s.name], ar_reference), ar_from_earlier_run=True)
        m["strict"] = strict_totals(by_mode[s.name]) if s.lr else None
        if not s.lr:
            m["cost_model"] = None
            continue
        t = m["totals"]
        if schedule == "sync":
            m["time"]["orchestration_s"] = round(t["wall_s"] - t["draft_s"] - t["target_s"] - t["verify_s"], 3)
        base = out.get(s.base) if s.base else None
        m["cost_model"] = cost_model(s, t, base, ar, calib, schedule)
        if s.auto:
            m["depths_chosen"] = depths_chosen(by_mode[s.name])
        m["cost_model"]["schedule"] = schedule
        m["cost_model"]["realized_speedup"] = m["speedup_vs_ar"]
        if base and m["latency"]["mean_s"]:
            m["cost_model"]["realized_speedup_vs_base"] = round(base["latency"]["mean_s"] / m["latency"]["mean_s"], 4)
    return out


def cost_model(s: ModeSpec, t: dict, base: dict | None, ar: dict | None, calib: Calibration | None,
               schedule: str = "sync") -> dict:
    """The cost model for one lr configuration, with the schedule's formula (sync cycles, or the
    async window with drafting overlapped). Under depth "auto" it is evaluated at every g the
    policy may choose, with this run's c and r and the policy's own estimate of b from the run's
    verdicts (orchestrator/policy.py: the posterior mean, a shared prior across depths), and the
    best g is reported: if even that predicts no gain, the policy should have stepped aside
    (g = 0, about ar's speed). The raw rate's prediction is kept beside it: one accepted verdict
    makes b = 1.0, which predicts a gain that the evidence cannot carry."""
    def r_by_rows(n: int) -> list[float] | None:
        if not calib:
            return None
        rs = [calib.ratio(s.target_name, k) for k in range(1, n + 1)]
        return rs if all(x is not None for x in rs) else None

    def at(g: int, b_by_depth: list[float] | None = None) -> dict:
        r = calib.ratio(s.target_name, g + 1) if calib else None
        return lr_inputs(t, base["totals"] if base else None, ar["totals"] if ar else None, g, s.width, r,
                         calib.t1(s.target_name) if calib else None, calib.t1("target") if calib else None,
                         schedule=schedule, r_by_rows=r_by_rows(g + 1), b_by_depth=b_by_depth)

    if not s.auto:
        return at(int(s.depth))
    verdicts = Stats(verified_by_depth=list(t["verified_by_depth"]), accepted_by_depth=list(t["accepted_by_depth"]))
    b_est = SpeculationPolicy(max_depth=max(s.depths), schedule=schedule).estimate(verdicts).b_mean
    by_g = {}
    for g in s.depths:
        point = at(g)
        m = by_g[g] = at(g, b_est)
        m["predicted_speedup_point"] = point["predicted_speedup"]
    best = max(by_g, key=lambda g: by_g[g]["predicted_speedup"] or 0.0)
    out = dict(by_g[best])
    out["g"] = "auto"
    out["best_g"] = best
    out["b_policy"] = round(b_est[0], 4)
    out["b_policy_by_depth"] = [round(x, 4) for x in b_est]
    out["predicted_by_g"] = {g: m["predicted_speedup"] for g, m in by_g.items()}
    out["predicted_point_by_g"] = {g: m["predicted_speedup_point"] for g, m in by_g.items()}
    return out


def depths_chosen(records: list[dict]) -> dict:
    """Cycles per depth the policy chose, and its probe cycles, over the configuration's questions."""
    counts: list[int] = []
    for r in records:
        for g, n in enumerate(r["stats"].get("depth_counts") or []):
            counts += [0] * (g + 1 - len(counts))
            counts[g] += n
    return {"cycles_by_depth": counts, "probes": sum(r["stats"].get("probes") or 0 for r in records)}
