"""The synchronous Lookahead Reasoning cost model (docs/cost-model.md) and its inputs from a run.

With i.i.d. step acceptance b and depth g, one cycle emits on average

    E = 1 + b + ... + b^g = (1 - b^(g+1)) / (1 - b)          steps,

and costs g draft steps (each c target-step times) plus one target call of batch g+1
(r = T_batch(g+1) / T_1 target-step times), so over the mode's own target ("base": `ar` for
`lr`, `sd` for `lr+sd`)

    speedup_vs_base = E / (g*c + r),
    speedup_vs_ar   = speedup_vs_base * T1_ar / T1_base.

How the inputs are measured (`lr_inputs`):
- T1_base: the base target's seconds per step at batch 1 = target_s / target_steps of the
  base mode's run (every call of ar/sd is one step at batch 1); when the base mode was not
  run, the start-up calibration's step time. T1_ar / T1_base (1 for lr) comes from the run
  when ar and the base both ran, else from the calibration.
- c = D / T1_base, D = seconds per drafted position = draft_s / (drafted_steps / W): the W
  siblings of one position are drafted in one batch, so a cycle pays g of these calls.
  Both are *step* times, so draft steps that run longer or shorter than target steps count.
- r: start-up calibration, the base target generating one step from the same prompt at
  batch g+1 vs batch 1 (identical rows: the same length, so only batching differs).
- b: accepted_steps / verified_steps of the lr run (all depths pooled).
Verification and orchestration are outside the paper's formula; `lr_inputs` reports them
(per cycle, in T1_base units) beside the observed steps per cycle and target cost per cycle,
so a gap between prediction and realization can be attributed.
"""
from __future__ import annotations

# the formulas live in the core (the adaptive depth policy uses them); re-exported here
from orchestrator.cost_model import (  # noqa: F401
    async_speedup,
    cycle_speedup,
    predicted_speedup,
    steps_per_cycle,
    steps_per_cycle_by_depth,
    steps_per_run,
)


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def lr_inputs(lr: dict, base: dict | None, ar: dict | None, g: int, width: int,
              r: float | None, calib_t1_base: float | None, calib_t1_ar: float | None, *,
              schedule: str = "sync", r_by_rows: list[float] | None = None,
              b_by_depth: list[float] | None = None) -> dict:
    """The cost model for one lr mode from summed Stats (`lr`, `base`, `ar`: dicts with
    draft_s, target_s, verify_s, wall_s, cycles, drafted_steps, verified_steps, accepted_steps,
    target_steps, steps, draft_tokens_generated, and the verdicts by depth). `schedule`: the
    formula, sync cycles or the async window (drafting overlapped; needs `r_by_rows`, r(1..g+1));
    `b_by_depth`: acceptance to predict with instead of the run's pooled rate (the policy's
    estimate). Values that cannot be measured are None."""
    run_base = _div(base["target_s"], base["target_steps"]) if base else None
    run_ar = _div(ar["target_s"], ar["target_steps"]) if ar else None
    t1_base = run_base or calib_t1_base
    # T1_ar / T1_base from one source: both from the run, else both from the calibration
    base_speedup = (run_ar / run_base if run_ar and run_base
                    else calib_t1_ar / calib_t1_base if calib_t1_ar and calib_t1_base else None)
    b = _div(lr["accepted_steps"], lr["verified_steps"]) or 0.0
    bs = b_by_depth or [b]
    draft_calls = lr["drafted_steps"] / width if width else 0
    d = _div(lr["draft_s"], draft_calls)
    c = _div(d, t1_base) if d is not None and t1_base else None
    out: dict = {
        "g": g, "width": width, "b": round(b, 4), "c": _r(c), "r": _r(r),
        "E": round(steps_per_run(bs) if schedule == "async" else steps_per_cycle_by_depth(bs, g), 4),
        "schedule": schedule,
        "t1_base_s": _r(t1_base), "t1_base_source": "run" if run_base else "calibration",
        "base_speedup": _r(base_speedup),
        "draft_step_s": _r(d),
        "predicted_speedup_vs_base": None, "predicted_speedup": None,
    }
    if c is not None and r and (schedule == "sync" or r_by_rows):
        vs_base = async_speedup(bs, g, c, r_by_rows) if schedule == "async" else cycle_speedup(bs, g, c, r)
        out["predicted_speedup_vs_base"] = round(vs_base, 4)
        if base_speedup:
            out["predicted_speedup"] = round(vs_base * base_speedup, 4)
    tokens = lr.get("draft_tokens_generated") or 0
    if tokens and base and base.get("target_tokens") and t1_base:
        per_tok_base = base["target_s"] / base["target_tokens"]
        out["c_per_token"] = _r(lr["draft_s"] / tokens / per_tok_base)
    cycles = lr["cycles"]
    if cycles and t1_base:
        unit = cycles * t1_base  # per cycle, in target-step times
        other = lr["wall_s"] - lr["draft_s"] - lr["target_s"] - lr["verify_s"]
        out["observed"] = {
            "steps_per_cycle": _r(lr["steps"] / cycles),
            # drafting stops early after a draft that ends the answer or is cut at the step
            # limit, so a cycle may draft fewer than g positions and batch fewer than g + 1 rows
            "drafted_positions_per_cycle": _r(draft_calls / cycles),
            "target_rows_per_call": _r(_div(lr.get("target_rows", 0), lr.get("target_calls", 0))),
            "draft_per_cycle": _r(lr["draft_s"] / unit),
            "target_per_cycle": _r(lr["target_s"] / unit),  # the realized r
            "verify_per_cycle": _r(lr["verify_s"] / unit),
            "other_per_cycle": _r(other / unit),
        }
    return out


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)
