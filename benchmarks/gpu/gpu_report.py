"""What the GPU benchmark (benchmarks/gpu/gpu_bench.py) prints last and draws: the short summary table
(a device call returns the end of the output) and the PNG."""
from __future__ import annotations

from pathlib import Path

B_VALUES = (0.3, 0.5, 0.7, 0.9)


def times(v) -> str:
    """A speedup or prediction for the log: 1.23x, or - where there is none."""
    return "-" if v is None else f"{v:.2f}x"
SECTIONS = ("preflight", "bandwidth", "decode", "bernoulli", "traces", "lr_sd", "policy", "sizes", "serve")


def summary_lines(result: dict) -> list[str]:
    """The short table printed last (a device call returns the end of the output)."""
    lines = [f"{result['device']['name']} (torch {result['device']['torch']}): random weights, replayed acceptance"]
    pf = result.get("preflight") or {}
    lines.append(f"preflight: capture {pf.get('capture')}, graphs captured {pf.get('graph_captured')}, "
                 f"static == full forward {pf.get('static_equals_full_forward')} "
                 f"{pf.get('checks', pf.get('error', ''))}")
    lines.append(f"copy bandwidth {(result.get('bandwidth') or {}).get('gb_per_s')} GB/s")
    for key, e in (result.get("decode") or {}).items():
        if "ms_per_token" in e:
            ms = e["ms_per_token"]
            top = max(ms, key=int)
            lines.append(f"decode {e['shape']['name']:>14}: {ms['1']:.3f} ms/token at batch 1, {ms[top]:.3f} at {top}; "
                         f"bound {e['bound_ms']:.3f} ms ({e['fraction_of_bound_batch1']} of bound)")
        else:
            lines.append(f"decode {key}: {e}")
    if result.get("ratios"):
        lines.append(f"draft/target per token: {result['ratios']['draft_over_target_per_token']}")
    for r in (result.get("bernoulli") or {}).get("runs", []):
        if r["b"] == 0.5 and r["g"] == 4:
            lines.append(f"bernoulli b=0.5 g=4 {r['schedule']}: {times(r['speedup'])} realized, "
                         f"{times(r['predicted'])} predicted ({times(r['predicted_at_realized_b'])} at the "
                         f"realized b={r['acceptance']})")
    bern = result.get("bernoulli") or {}
    if "runs" in bern:
        lines.append(f"bernoulli grid: {len(bern['runs'])} runs, {len(bern.get('skipped', []))} skipped")
    for e in (result.get("traces") or {}).get("files", []):
        lines.append(f"trace {e['file']}: {e['questions']}/{e['questions_recorded']} questions, "
                     f"b={e['recorded_acceptance']}: "
                     + ", ".join(f"{r['schedule']} {times(r.get('speedup'))}" for r in e["runs"])
                     + f" (predicted {times(e['predicted'])}, by depth {times(e.get('predicted_by_depth'))})")
    lsd = result.get("lr_sd") or {}
    if "sd" in lsd:
        lines.append(f"sd k={lsd['k']}: {times(lsd['sd']['speedup'])}; lr+sd: " + ", ".join(
            f"b={r['b']} {r['skipped'] if 'skipped' in r else times(r['speedup'])}" for r in lsd["lr_sd"]))
    pol = (result.get("policy") or {}).get("runs", [])
    if pol:
        lines.append("policy (depth auto): " + ", ".join(
            f"b={r['b']} {r['skipped'] if 'skipped' in r else times(r['speedup'])} depths {r.get('depth_counts')}"
            for r in pol))
    for name in SECTIONS:
        e = result.get(name)
        if isinstance(e, dict) and (e.get("skipped_all") or e.get("error")):
            lines.append(f"{name}: {e.get('skipped_all') or e.get('error')}")
    if result.get("stopped"):
        lines.append(f"STOPPED: {result['stopped']}")
    lines.append(f"total {(result.get('timing') or {}).get('total_s')} s")
    return lines


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    dec = dict(sorted(((k, v) for k, v in result.get("decode", {}).items() if "ms_per_token" in v),
                      key=lambda kv: kv[1]["params"]))
    names = [v["shape"]["name"] for v in dec.values()]
    x = range(len(dec))
    ax.bar([i - 0.25 for i in x], [v["bound_ms"] for v in dec.values()], 0.25, label="bound (bytes / copy bw)")
    ax.bar(list(x), [v["ms_per_token"].get("1", 0) for v in dec.values()], 0.25, label="batch 1")
    big = max((int(b) for v in dec.values() for b in v["ms_per_token"]), default=1)
    ax.bar([i + 0.25 for i in x], [v["ms_per_token"].get(str(big), 0) for v in dec.values()], 0.25,
           label=f"batch {big}")
    ax.set_xticks(list(x), names, rotation=20, fontsize=8)
    ax.set_ylabel("ms / token")
    ax.set_yscale("log")
    ax.set_title("static decode vs bandwidth bound")
    ax.legend(fontsize=8)

    ax = axes[1]
    runs = (result.get("bernoulli") or {}).get("runs", [])
    for b in B_VALUES:
        for schedule, style in (("sync", "-o"), ("async", "--s")):
            pts = sorted((r["g"], r["speedup"]) for r in runs if r["b"] == b and r["schedule"] == schedule)
            if pts:
                line, = ax.plot(*zip(*pts), style, label=f"b={b} {schedule}")
                if schedule == "sync":
                    pred = sorted((r["g"], r["predicted"]) for r in runs
                                  if r["b"] == b and r["schedule"] == "sync" and r["predicted"])
                    if pred:
                        ax.plot(*zip(*pred), ":", color=line.get_color(), alpha=0.6)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("depth g")
    ax.set_ylabel("speedup over ar (dotted: cost model, sync)")
    ax.set_title("lr, Bernoulli-replayed acceptance")
    if runs:
        ax.legend(fontsize=7, ncol=2)

    ax = axes[2]
    bars = []
    for t in (result.get("traces") or {}).get("files", []):
        for r in t.get("runs", []):
            if r.get("speedup"):
                label = f"trace {t['target']} ({t['questions']} q)\n{r['schedule']} b={t['recorded_acceptance']:.2f}"
                bars.append((label, r["speedup"], r.get("predicted")))
    lsd = result.get("lr_sd") or {}
    if (lsd.get("sd") or {}).get("speedup"):
        bars.append((f"sd k={lsd['k']}", lsd["sd"]["speedup"], None))
    for r in lsd.get("lr_sd", []):
        if r.get("speedup"):
            bars.append((f"lr+sd b={r['b']}", r["speedup"], None))
    for r in (result.get("policy") or {}).get("runs", []):
        if r.get("speedup"):
            bars.append((f"auto b={r['b']}", r["speedup"], None))
    if bars:
        ax.bar(range(len(bars)), [b[1] for b in bars], label="realized")
        ax.scatter([i for i, b in enumerate(bars) if b[2]], [b[2] for b in bars if b[2]], color="k", marker="_",
                   s=200, label="cost model")
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=60, fontsize=7)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.legend(fontsize=8)
    ax.set_title("traces, lr+sd, adaptive depth (speedup over ar)")
    fig.suptitle(f"{result['device']['name']}: random weights, replayed acceptance", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
