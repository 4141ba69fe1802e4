"""The bounded sweep: speedup vs depth (sd alone vs lr+sd, like the paper's Figure 1) and an
equal-budget grid over depth g x width W x sd tokens K.

Configurations (each runs every sweep question, interleaved like the main run):
- ar, the baseline;
- Figure 1: for x in `fig_depths`, sd with K = x tokens and lr+sd at depth g = x over the
  run's sd target (K = --sd-tokens, W = 1);
- the grid: lr+sd for every (g, W, K) in grid_depths x grid_widths x grid_sd_tokens (K = 0 is
  lr alone), and sd at every budget the grid reaches (sd's budget is K), so each grid point
  has an sd point of the same budget (modes.py defines the budget) to beat; every lr+sd
  configuration also gets sd at its own K (its base: the cost model's T1).
"""
from __future__ import annotations

from itertools import product

from benchmarks.bench.modes import ModeSpec

MAX_SD_TOKENS = 16  # EngineConfig.num_speculative_tokens


def sd_spec(k: int) -> ModeSpec:
    return ModeSpec(f"sd K={k}", sd_tokens=k)


def lr_spec(g: int, w: int, k: int) -> ModeSpec:
    if k:
        return ModeSpec(f"lr+sd g={g} W={w} K={k}", lr=True, sd_tokens=k, depth=g, width=w, base=f"sd K={k}")
    return ModeSpec(f"lr g={g} W={w}", lr=True, depth=g, width=w, base="ar")


def sweep_specs(fig_depths: list[int], grid_depths: list[int], grid_widths: list[int],
                grid_sd_tokens: list[int], sd_tokens: int) -> list[ModeSpec]:
    grid = {lr_spec(g, w, k) for g, w, k in product(grid_depths, grid_widths, grid_sd_tokens)}
    lr = grid | {lr_spec(g, 1, sd_tokens) for g in fig_depths}
    ks = set(fig_depths) | {s.budget for s in grid} | {s.sd_tokens for s in lr}
    sd = [sd_spec(k) for k in sorted(ks) if 0 < k <= MAX_SD_TOKENS]
    return [ModeSpec("ar")] + sd + sorted(lr, key=lambda s: (s.sd_tokens > 0, s.depth, s.width, s.sd_tokens))


def sweep_result(summary: dict, specs: list[ModeSpec], fig_depths: list[int], sd_tokens: int) -> dict:
    """Points, the Figure-1 curves and the equal-budget comparison from a sweep's summary."""
    points = []
    for s in specs:
        m = summary[s.name]
        cm = m.get("cost_model") or {}
        points.append({
            "name": s.name, "kind": s.mode.name, "g": s.depth if s.lr else None, "W": s.width if s.lr else None,
            "K": s.sd_tokens, "budget": s.budget, "draft_steps_per_cycle": s.depth * s.width if s.lr else 0,
            "speedup": m["speedup_vs_ar"], "predicted_speedup": cm.get("predicted_speedup"),
            "acceptance": m["acceptance"]["rate"], "accuracy": m["accuracy"],
            "latency_mean_s": m["latency"]["mean_s"],
        })
    by_name = {p["name"]: p for p in points}

    def speedup(name: str):
        return by_name[name]["speedup"] if name in by_name else None

    figure1 = {"x": fig_depths, "sd_tokens": sd_tokens,
               "sd": [speedup(sd_spec(x).name) for x in fig_depths],
               "lr+sd": [speedup(lr_spec(x, 1, sd_tokens).name) for x in fig_depths],
               "lr+sd_predicted": [by_name.get(lr_spec(x, 1, sd_tokens).name, {}).get("predicted_speedup")
                                   for x in fig_depths]}
    equal = []
    budgets = {p["budget"] for p in points if p["kind"].startswith("lr")} & {p["budget"] for p in points
                                                                            if p["kind"] == "sd"}
    for budget in sorted(budgets):  # the budgets sd alone was run at
        lr_points = [p for p in points if p["kind"].startswith("lr") and p["budget"] == budget
                     and p["speedup"] is not None]
        best = max(lr_points, key=lambda p: p["speedup"], default=None)
        sd = speedup(sd_spec(budget).name) if 0 < budget <= MAX_SD_TOKENS else None
        winner = None
        if best is not None and sd is not None:
            winner = best["name"] if best["speedup"] > sd else sd_spec(budget).name
        equal.append({"budget": budget, "sd_speedup": sd, "best_lr": best["name"] if best else None,
                      "best_lr_speedup": best["speedup"] if best else None, "winner": winner,
                      "lr_points": [p["name"] for p in lr_points]})
    return {"points": points, "figure1": figure1, "equal_budget": equal}
