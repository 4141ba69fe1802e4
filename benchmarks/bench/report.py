"""Write a benchmark result: bench.json, bench.md and PNG plots (matplotlib, Agg backend)."""
from __future__ import annotations

import json
from pathlib import Path

COST_MODEL_NOTE = """\
Cost model (docs/cost-model.md). Sync cycles: a cycle drafts g steps and expands the target g + 1
times in one batch; with step acceptance b it emits E = (1 - b^(g+1)) / (1 - b) steps, so

    predicted speedup over the mode's own target = E / (g*c + r),  times T1_ar / T1_base for "vs ar".

Async window (schedule async): drafting overlaps the target; a run of E = 1/(1 - b) steps between
rejections costs r + tau (E - 1), tau = max(c, (r + c)/(g + 1)) the cadence of accepted steps and r
the target step under the window's load (orchestrator/cost_model.py, async_speedup).

- b: accepted / verified drafts of the run (all depths pooled, probes included).
- c: draft/target step-time ratio = D / T1_base. D = seconds per drafted position =
  draft_s / (drafted_steps / W); T1_base = seconds per target step at batch 1 = target_s /
  target_steps of the base mode's run (ar for lr, sd for lr+sd). Both are step times, so draft
  steps longer or shorter than target steps are priced in. c/token is the per-token ratio.
- r = T_batch(g+1) / T_1: start-up calibration, the base target writing one step of the same
  prompt as g + 1 identical rows vs 1 row.
- Outside the formula, measured per cycle in T1_base units: the target call actually paid
  (realized r), drafting, verification and other (orchestration: wall - draft - target - verify;
  draft, target and verify are busy times, which overlap under async and in probes).
  The realized speedup over the base is about steps/cycle / (draft + target + verify + other).
  A cycle drafts fewer than g positions (and batches fewer than g + 1 target rows) when a draft
  ends the answer or is cut at the step limit: drafted/cycle and target rows/call show how often.
"""

QUALITY_NOTE = """\
Accuracy: the answer's last number against the GSM8K gold. Same final answer as ar: the same last
number as ar's answer to the question (in this run). Accepted drafts used: drafted steps the
answers kept; of those, how many are not the target's own step (after whitespace folding),
and how many the numeric guard (verifier/numeric.py) would have rejected against the target's
step: the accepted drafts a stricter check would have refused (benchmarks/bench/strict_check.py).
"""

BUDGET_NOTE = """\
Speculation budget = token positions the target evaluates speculatively per forward pass,
beyond the single position of plain decoding: K for sd (K proposed tokens), g for lr (g of
the g + 1 batched rows are speculative), (g + 1)(K + 1) - 1 for lr+sd. Width W adds draft and
verifier work (g*W drafted steps per cycle), not target positions. A grid point "wins" when
lr(+sd) at budget B beats sd alone with K = B. On engines where speculative positions are
not nearly free (CPU; the hf engine runs prompt-lookup rows one at a time) the budget is not
the cost, which is why the measured speedups are reported next to it.
"""


def _f(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(result: dict, images: list[str]) -> str:
    cfg, env = result.get("config", {}), result.get("environment", {})
    modes = result.get("summary", {})
    lines = ["# Lookahead benchmark", ""]
    lines.append(f"{env.get('date', '')} - {env.get('cpus_available', '?')} CPUs, torch {env.get('torch', '?')}, "
                 f"engine {cfg.get('engine', '?')}, target {cfg.get('target')}, draft {cfg.get('draft')}, "
                 f"verifier {cfg.get('verifier')}, {result.get('n_questions', '?')} questions from "
                 f"{Path(str(cfg.get('data', ''))).name}, max tokens {cfg.get('max_tokens')}, g={cfg.get('depth')}, "
                 f"W={cfg.get('width')}, K={cfg.get('sd_tokens')}, {cfg.get('schedule')}, "
                 f"temperature {cfg.get('temperature')}, load average at start {env.get('loadavg')}.")
    lines += ["", "Speedup = mean latency of ar / mean latency of the mode, measured in the same run "
              "(modes interleaved per question).", ""]
    if cfg.get("ar_from"):
        lines += [f"No ar in this run: \"same ... as ar\" compares with the ar answers in {cfg['ar_from']} "
                  "(an earlier run of the same questions and settings); speedup needs ar in the same run.", ""]
    if result.get("skipped_questions"):
        lines += [f"**Time budget reached: {len(result['skipped_questions'])} question(s) not run** "
                  f"(file rows {result['skipped_questions']}; raise --time-budget).", ""]
    if modes:
        rows = []
        for name, m in modes.items():
            acc = m["acceptance"]
            rows.append([name, _f(m["accuracy"], "{:.0%}"), _f(m["latency"]["mean_s"]), _f(m["latency"]["p50_s"]),
                         _f(m["latency"]["p90_s"]), _f(m["tokens_per_s"]), _f(m.get("speedup_vs_ar"), "{:.2f}x"),
                         _f(m.get("same_text_as_ar"), "{:.0%}"), _f(acc["rate"]),
                         " / ".join(_f(a) for a in acc["by_depth"]) or "-",
                         _f((m.get("cost_model") or {}).get("predicted_speedup"), "{:.2f}x")])
        lines += _table(["mode", "accuracy", "mean s", "p50 s", "p90 s", "tok/s", "speedup", "same text as ar",
                         "step acceptance", "acceptance by depth", "predicted"], rows)
        lines += ["", "## Answer quality", "", QUALITY_NOTE.rstrip(), ""]
        rows = []
        for name, m in modes.items():
            st = m.get("strict") or {}
            rows.append([name, _f(m["accuracy"], "{:.0%}"), _f(m.get("same_answer_as_ar"), "{:.0%}"),
                         _f(m.get("same_text_as_ar"), "{:.0%}"), _f(m["acceptance"]["rate"]),
                         str(st["accepted_drafts"]) if st else "-", str(st["not_equal"]) if st else "-",
                         str(st["guard_rejects"]) if st else "-", _f(m.get("speedup_vs_ar"), "{:.2f}x")])
        lines += _table(["mode", "accuracy", "same final answer as ar", "same text as ar", "step acceptance",
                         "accepted drafts used", "not equal to target step", "numeric guard would reject",
                         "speedup"], rows)
    lr = {k: m for k, m in modes.items() if m.get("cost_model")}
    if lr:
        lines += ["", "## Where the time goes (lr modes, seconds summed over questions)", ""]
        rows = []
        for name, m in lr.items():
            t = m["time"]
            rows.append([name, _f(t["wall_s"], "{:.1f}"), _f(t["draft_s"], "{:.1f}"), _f(t["target_s"], "{:.1f}"),
                         _f(t["verify_s"], "{:.1f}"), _f(t.get("orchestration_s"), "{:.1f}")])
        lines += _table(["mode", "wall", "draft", "target", "verify", "orchestration"], rows)
        lines += ["", "## Cost model: predicted vs realized", ""]
        rows = []
        for name, m in lr.items():
            c, o = m["cost_model"], m["cost_model"].get("observed") or {}
            g = f"auto (best {c['best_g']})" if c["g"] == "auto" else str(c["g"])
            b = _f(c["b"]) + (f" (policy {c['b_policy']:.2f})" if c.get("b_policy") is not None else "")
            rows.append([name, g, b, _f(c["c"]), _f(c.get("c_per_token")), _f(c["r"]),
                         _f(c["E"]), _f(c.get("predicted_speedup_vs_base"), "{:.2f}x"),
                         _f(c.get("realized_speedup_vs_base"), "{:.2f}x"), _f(c.get("predicted_speedup"), "{:.2f}x"),
                         _f(c.get("realized_speedup"), "{:.2f}x"), _f(o.get("drafted_positions_per_cycle")),
                         _f(o.get("target_rows_per_call")), _f(o.get("steps_per_cycle")),
                         _f(o.get("draft_per_cycle")), _f(o.get("target_per_cycle")), _f(o.get("verify_per_cycle")),
                         _f(o.get("other_per_cycle"))])
        lines += _table(["mode", "g", "b", "c", "c/token", "r", "E", "pred vs base", "real vs base", "pred vs ar",
                         "real vs ar", "drafted/cycle", "target rows/call", "steps/cycle", "draft/cycle", "target/cycle", "verify/cycle",
                         "other/cycle"], rows)
        lines += ["", COST_MODEL_NOTE.rstrip()]
        chosen = {name: m["depths_chosen"] for name, m in lr.items() if m.get("depths_chosen")}
        if chosen:
            lines += ["", "## Depths the policy chose (depth auto)", "",
                      "Cycles per depth g (g = 0: the target alone; probes: g = 0 cycles that also drafted one "
                      "step to keep the acceptance estimate fresh). A row with g = auto above shows the cost "
                      "model at its best g, on the policy's estimate of b from the run's verdicts (posterior "
                      "mean, a prior shared across depths; E and the predictions use it); where that predicts "
                      "no gain, the policy should stay at g = 0. Each question's "
                      "policy starts from the running totals of the configuration's earlier questions, as a "
                      "Serve replica's sessions start from its history.", ""]
            lines += _table(["mode", "cycles by g (0, 1, ...)", "probes"],
                            [[name, " / ".join(str(n) for n in d["cycles_by_depth"]) or "-", str(d["probes"])]
                             for name, d in chosen.items()])
    calib = (result.get("calibration") or {}).get("engines") or {}
    if calib:
        lines += ["", "## Calibration (one step of the first question, identical rows)", ""]
        rows = [[name, str(e["step_tokens"]), _f(e["t1_s"], "{:.3f}"), _f(e["per_token_s"], "{:.4f}"),
                 ", ".join(f"{k}: {v:.2f}" for k, v in e["ratio"].items())] for name, e in calib.items()]
        lines += _table(["engine", "step tokens", "T1 s", "s/token", "T_batch(n)/T_1"], rows)
        noisy = result["calibration"].get("noisy")
        if noisy:
            lines += ["", f"**Calibration of {', '.join(noisy)} is noisy** (a larger batch ran faster than batch 1): "
                      "other load on the machine; the predictions that use its r are unreliable."]
    sweep = result.get("sweep")
    if sweep:
        lines += ["", f"## Sweep ({sweep.get('n_questions', '?')} questions, max tokens "
                  f"{sweep.get('max_tokens', '?')})", "", BUDGET_NOTE.rstrip(), ""]
        rows = [[p["name"], str(p["budget"]), str(p["draft_steps_per_cycle"]), _f(p["speedup"], "{:.2f}x"),
                 _f(p["predicted_speedup"], "{:.2f}x"), _f(p["acceptance"]), _f(p["accuracy"], "{:.0%}"),
                 _f(p["latency_mean_s"])] for p in sweep["points"]]
        lines += _table(["config", "budget", "drafted steps/cycle", "speedup", "predicted", "step acceptance",
                         "accuracy", "mean s"], rows)
        lines += ["", "Equal budget: best lr/lr+sd configuration vs sd alone with K = budget", ""]
        rows = [[str(e["budget"]), _f(e["sd_speedup"], "{:.2f}x"), e["best_lr"] or "-",
                 _f(e["best_lr_speedup"], "{:.2f}x"), e["winner"] or "-"] for e in sweep["equal_budget"]]
        lines += _table(["budget", "sd alone", "best lr(+sd)", "its speedup", "winner"], rows)
    for img in images:
        lines += ["", f"![{Path(img).stem}]({Path(img).name})"]
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_acceptance(summary: dict, path: Path) -> bool:
    lr = {k: m["acceptance"] for k, m in summary.items() if m.get("cost_model") and m["acceptance"]["by_depth"]}
    if not lr:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(lr)
    for i, (name, acc) in enumerate(lr.items()):
        xs = [d + 1 + (i - (len(lr) - 1) / 2) * width for d in range(len(acc["by_depth"]))]
        ys = [a or 0.0 for a in acc["by_depth"]]
        bars = ax.bar(xs, ys, width, label=f"{name} (overall {_f(acc['rate'])})")
        for bar, n in zip(bars, acc["verified_by_depth"]):
            ax.annotate(f"n={n}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=7)
    ax.set_xticks(range(1, max(len(a["by_depth"]) for a in lr.values()) + 1))
    ax.set_xlabel("depth (drafted step position in the cycle)")
    ax.set_ylabel("step acceptance")
    ax.set_ylim(0, 1.1)
    return _save(plt, fig, ax, "Step acceptance by depth", path)


def _save(plt, fig, ax, title: str, path: Path) -> bool:
    """Every figure ends the same way: legend, title, tight layout, PNG, closed."""
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_sweep_depth(sweep: dict, path: Path) -> bool:
    f1 = sweep.get("figure1") or {}
    if not f1.get("x"):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(f1["x"], [y if y is not None else float("nan") for y in f1["sd"]], "o-", label="sd alone (K = x tokens)")
    ax.plot(f1["x"], [y if y is not None else float("nan") for y in f1["lr+sd"]], "s-",
            label=f"lr+sd (depth g = x, K = {f1.get('sd_tokens')})")
    pred = [y if y is not None else float("nan") for y in f1.get("lr+sd_predicted", [])]
    if pred:
        ax.plot(f1["x"], pred, "s--", alpha=0.5, label="lr+sd predicted (cost model)")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("speculation depth x")
    ax.set_ylabel("speedup over ar")
    ax.set_xticks(f1["x"])
    return _save(plt, fig, ax, "Speedup vs depth", path)


def plot_sweep_budget(sweep: dict, path: Path) -> bool:
    points = [p for p in sweep.get("points", []) if p["speedup"] is not None and p["kind"] != "ar"]
    if not points:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sd = sorted((p for p in points if p["kind"] == "sd"), key=lambda p: p["budget"])
    ax.plot([p["budget"] for p in sd], [p["speedup"] for p in sd], "k-o", label="sd alone")
    for kind, marker in (("lr", "^"), ("lr+sd", "s")):
        for w, colour in ((1, "tab:blue"), (2, "tab:orange"), (3, "tab:green"), (4, "tab:red")):
            pts = [p for p in points if p["kind"] == kind and p["W"] == w]
            if pts:
                ax.scatter([p["budget"] for p in pts], [p["speedup"] for p in pts], marker=marker, color=colour,
                           label=f"{kind} W={w}", zorder=3)
                for p in pts:
                    ax.annotate(f"g{p['g']}K{p['K']}", (p["budget"], p["speedup"]), fontsize=6,
                                xytext=(3, 3), textcoords="offset points")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("speculation budget (speculative target positions per forward)")
    ax.set_ylabel("speedup over ar")
    ax.legend(fontsize=7)
    ax.set_title("Equal budget: lr(+sd) vs sd alone")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(result: dict, out_dir: str | Path) -> list[Path]:
    """Write bench.json, bench.md and the plots that apply; return the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    images = []
    summary = result.get("summary") or {}
    if plot_acceptance(summary, out / "acceptance_by_depth.png"):
        images.append(str(out / "acceptance_by_depth.png"))
    sweep = result.get("sweep")
    if sweep:
        if plot_sweep_depth(sweep, out / "sweep_depth.png"):
            images.append(str(out / "sweep_depth.png"))
        if plot_sweep_budget(sweep, out / "sweep_budget.png"):
            images.append(str(out / "sweep_budget.png"))
    (out / "bench.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (out / "bench.md").write_text(markdown(result, images))
    written += [out / "bench.json", out / "bench.md"] + [Path(p) for p in images]
    return written
