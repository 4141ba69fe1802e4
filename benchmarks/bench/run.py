"""`lookahead bench run`: accuracy and speed of ar / sd / lr / lr+sd on GSM8K, in one run.

Each engine is loaded once; every question runs every mode before the next question starts
(order rotated per question), so machine drift falls on all modes alike. Per mode: accuracy
(last number of the answer vs the "#### N" gold), latency mean/p50/p90, output tokens/s,
speedup over ar, answer quality (same final answer as ar; accepted drafts that equality or
the numeric guard would have rejected, benchmarks/bench/strict_check.py), step acceptance overall
and by depth, where lr's time goes, and the
synchronous cost model's predicted speedup next to the realized one (benchmarks/cost_model.py
defines c, r and b). Writes bench.json, bench.md and PNGs to --out. --sweep adds a bounded
sweep: speedup vs depth (sd alone vs lr+sd) and an equal-budget grid over g x W x K.

    lookahead bench run                              # 3 questions, 128 tokens, ar,sd,lr,lr+sd
    lookahead bench run --limit 1 --max-tokens 32    # smoke test
    lookahead bench run --modes ar,lr --verifiers embedding,llm-judge,target-score   # verifiers side by side
    lookahead bench run --sweep --sweep-only         # the sweep alone

The command line (models, engines, sampling) is the CLI's (deployments/cli/bench.py); this
module adds the benchmark's own options and runs it.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from deployments.config import EngineConfig, LookaheadDefaults, VerifierConfig
from orchestrator.modes import SCHEDULES

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "benchmarks" / "out"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def defaults() -> dict:
    """What `lookahead bench run` sets unlike `lookahead generate`: the bench's own choices, and
    the config's defaults for what the bench reads itself (spec names, calibration, the report)."""
    engine, session = EngineConfig(model="-"), LookaheadDefaults()
    # a fixed g by default, so the cost model is checked at that g; --depth auto runs the adaptive policy
    # and reports the cost model at its best g next to the depths the policy chose
    return {"verifier": "embedding", "max_tokens": 128, "depth": 4, "engine": engine.engine,
            "sd_tokens": engine.num_speculative_tokens, "width": session.width, "schedule": session.schedule,
            "func": cmd_bench}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's own options (the CLI adds the model and sampling ones)."""
    from benchmarks.data import DEFAULT_DATA

    p.add_argument("--data", default=str(DEFAULT_DATA), help="GSM8K-format JSONL (question, answer '#### N')")
    p.add_argument("--limit", type=int, default=3, help="questions to run")
    p.add_argument("--skip", type=int, default=0, metavar="N",
                   help="start after the first N questions (the rest of a time-boxed run; "
                        "benchmarks/bench/merge.py joins the two bench.json)")
    p.add_argument("--modes", default="ar,sd,lr,lr+sd", help="comma-separated: ar, sd, lr, lr+sd")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="directory for bench.json, bench.md, PNGs")
    p.add_argument("--schedule", choices=SCHEDULES, dest="schedule", help="lr schedule (as --sync / --async)")
    p.add_argument("--verifiers", default=None, metavar="A,B,...",
                   help="compare verifiers in one run: each lr mode once per verifier, named lr[A], lr[B] "
                        "(default: --verifier alone). llm-judge asks --judge, or the target without one")
    p.add_argument("--system", default=None,
                   help="system message before each question, e.g. 'Solve the problem step by step. Put a blank "
                        "line between steps.' (SmolLM2 separates steps with blank lines only when asked)")
    p.add_argument("--calib-tokens", type=int, default=16, help="step length of the start-up batch calibration")
    p.add_argument("--calib-reps", type=int, default=2, help="timed repetitions per batch size (best is kept)")
    p.add_argument("--ar-from", metavar="BENCH_JSON", help="without ar in --modes: compare answers with the ar "
                   "answers of an earlier bench.json of the same questions and settings (quality only; "
                   "speedup needs ar in the same run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--record-traces", metavar="DIR", help="write each lr configuration's step trace (verdicts and "
                   "step lengths per position, benchmarks/bench/traces.py) as JSON to DIR, for benchmarks/gpu/replay.py")
    p.add_argument("--time-budget", type=float, default=14.0, metavar="MIN",
                   help="main run: start no new question that would end past MIN minutes from start "
                        "(skipped questions are reported; 0 = no limit)")
    s = p.add_argument_group("sweep")
    s.add_argument("--sweep", action="store_true", help="also run the bounded depth / equal-budget sweep")
    s.add_argument("--sweep-only", action="store_true", help="run the sweep without the main comparison")
    s.add_argument("--sweep-limit", type=int, default=2, help="questions in the sweep")
    s.add_argument("--sweep-max-tokens", type=int, default=96, help="max tokens per answer in the sweep")
    s.add_argument("--sweep-max-depth", type=int, default=3, help="speedup-vs-depth curve for x = 1..N")
    s.add_argument("--sweep-depths", type=_ints, default=[1, 2], help="equal-budget grid: depths g")
    s.add_argument("--sweep-widths", type=_ints, default=[1, 2], help="equal-budget grid: widths W")
    s.add_argument("--sweep-sd-tokens", type=_ints, default=[0, 1], help="equal-budget grid: sd tokens K (0 = lr)")


def environment(args) -> dict:
    import torch
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "cpus_available": len(os.sched_getaffinity(0)),
        "loadavg": [round(x, 2) for x in os.getloadavg()], "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "engine": args.engine, "git_commit": commit,
        "models": {"target": args.target, "draft": args.draft, "judge": args.judge,
                   "embedding": VerifierConfig().embedding_model if "embedding" in (args.verifiers or args.verifier)
                   else None},
    }


def main_run_specs(args) -> tuple[list[str], list]:
    """The main run's modes and ModeSpecs from --modes, --verifiers, --depth, --width, --sd-tokens
    (a bench's args or a bench.json's config)."""
    from benchmarks.bench.modes import main_specs
    from verifier.kinds import VERIFIER_KINDS

    modes = [] if getattr(args, "sweep_only", False) else [m.strip() for m in args.modes.split(",") if m.strip()]
    verifiers = [v.strip() for v in args.verifiers.split(",") if v.strip()] if args.verifiers else None
    unknown = [v for v in verifiers or [] if v not in VERIFIER_KINDS]
    if unknown:
        raise ValueError(f"unknown verifier(s) {', '.join(unknown)}; choose from {', '.join(VERIFIER_KINDS)}")
    return modes, main_specs(modes, args.depth, args.width, args.sd_tokens, verifiers)


def question_rows(args, sweep: bool) -> tuple[list[dict], list[dict], list[dict]]:
    """All rows read, the main run's (--limit of them after the first --skip) and the sweep's."""
    from benchmarks.data import load_questions

    if args.skip < 0:
        raise ValueError(f"--skip {args.skip}: expected a count of questions, 0 or more")
    rows = load_questions(args.data, max(args.skip + args.limit, args.sweep_limit if sweep else 0), args.seed)
    main_rows, sweep_rows = rows[args.skip:args.skip + args.limit], rows[:args.sweep_limit]
    if not main_rows:
        raise ValueError(f"no questions in {args.data}" + (f" after the first {args.skip}" if args.skip else ""))
    return rows, main_rows, sweep_rows


def estimate_s(specs, calib, n_questions: int, max_tokens: int, b: float) -> float:
    """Rough run time: every answer max_tokens long, lr at step acceptance b, no verifier cost."""
    from benchmarks.cost_model import steps_per_cycle

    total = 0.0
    for s in specs:
        per_tok = calib.per_token(s.target_name) or 0.0
        factor = 1.0
        if s.lr and per_tok and not s.auto:  # auto: about ar's time where speculation cannot pay
            draft = (calib.per_token("draft") or 0.0) * (calib.ratio("draft", s.width) or s.width)
            r = calib.ratio(s.target_name, s.depth + 1) or s.depth + 1
            factor = (s.depth * draft / per_tok + r) / steps_per_cycle(b, s.depth)
        total += n_questions * max_tokens * per_tok * factor
    return total


async def run_bench(args) -> dict:
    from benchmarks.bench.calibrate import Calibration
    from benchmarks.bench.engines import EnginePool
    from benchmarks.bench.modes import ModeSpec
    from benchmarks.bench.runner import Runner
    from benchmarks.bench.summary import summarize
    from benchmarks.bench.sweep import sweep_result, sweep_specs
    from orchestrator.types import Prompt

    t_start = time.perf_counter()
    args.schedule = args.schedule or "sync"
    modes, specs = main_run_specs(args)
    fig_depths = list(range(1, args.sweep_max_depth + 1))
    sweep = (sweep_specs(fig_depths, args.sweep_depths, args.sweep_widths, args.sweep_sd_tokens, args.sd_tokens)
             if args.sweep or args.sweep_only else [])
    rows, main_rows, sweep_rows = question_rows(args, bool(sweep))
    ar_reference = None
    if getattr(args, "ar_from", None):
        if "ar" in modes:
            raise ValueError("--ar-from compares with an earlier run's ar: leave ar out of --modes")
        from benchmarks.bench.ar_reference import load_ar_reference

        ar_reference = load_ar_reference(args.ar_from, args, main_rows)

    pool = EnginePool()
    # Closed on every way out (an error while loading or calibrating, Ctrl-C, SIGTERM: see
    # deployments/cli/main.py): closing a vLLM engine ends its EngineCore process, which would
    # otherwise outlive this one.
    try:
        runner = Runner(args, pool)
        print(f"loading engines ({args.engine}): target {args.target}, draft {args.draft}, "
              f"verifier {args.verifiers or args.verifier}",
              file=sys.stderr, flush=True)
        engines, batches = {}, {}
        for s in specs + sweep:
            cfg, target, draft = runner.engines(s)
            engines.setdefault(s.target_name, target)
            sizes = batches.setdefault(s.target_name, {1})
            if s.lr:
                sizes.update(g + 1 for g in s.depths)  # every batch a cycle of this configuration can send
            if s.lr:
                engines["draft"] = draft
                batches.setdefault("draft", {1}).add(s.width)
                runner.verifier(cfg)
        load_s = time.perf_counter() - t_start

        calib = Calibration(Prompt(messages=[{"role": "user", "content": rows[0]["question"]}]), tokens=args.calib_tokens,
                            reps=args.calib_reps)
        for name in ("target", "target+ngram", "draft"):
            if name in engines:
                if name == "target+ngram":
                    runner.engines(ModeSpec("sd", sd_tokens=args.sd_tokens))  # calibrate at --sd-tokens
                e = await calib.measure(name, engines[name], sorted(batches[name]))
                print(f"calibrated {name}: {e['tokens']}-token step {e['batch'][1]:.2f} s at batch 1; "
                      + ", ".join(f"batch {k}: {v / e['batch'][1]:.2f}x" for k, v in sorted(e["batch"].items()) if k > 1),
                      file=sys.stderr, flush=True)
                if calib.noisy(name):
                    print(f"warning: calibration of {name} is noisy (a larger batch ran faster than batch 1); "
                          "other load on the machine? try --calib-reps 3", file=sys.stderr, flush=True)
        for what, sp, n, mt in (("main run", specs, len(main_rows), args.max_tokens),
                                ("sweep", sweep, len(sweep_rows), args.sweep_max_tokens)):
            if sp:
                lo, hi = estimate_s(sp, calib, n, mt, 0.5), estimate_s(sp, calib, n, mt, 0.0)
                print(f"{what}: {len(sp)} configurations x {n} questions, estimated {lo / 60:.1f}-{hi / 60:.1f} min "
                      f"(step acceptance 0.5-0, answers up to {mt} tokens)", file=sys.stderr, flush=True)

        result = {"config": {k: v for k, v in vars(args).items() if k != "func"}, "environment": environment(args),
                  "n_questions": len(main_rows), "questions": [
                      {k: r[k] for k in ("index", "question", "gold")} for r in rows]}
        recorder = None
        if getattr(args, "record_traces", None):
            from benchmarks.bench.traces import TraceRecorder

            recorder = TraceRecorder(args.record_traces)
            recorder.attach(runner)  # after calibration: only the benchmarked runs are recorded
        t0 = time.perf_counter()
        deadline = t_start + args.time_budget * 60 if args.time_budget > 0 else None
        records = await runner.run_all(specs, main_rows, "bench", deadline) if specs else []
        result["records"] = records
        result["skipped_questions"] = runner.skipped
        result["n_questions"] = len(main_rows) - len(runner.skipped)
        result["summary"] = summarize(records, specs, calib, args.schedule, ar_reference) if specs else {}
        run_s = time.perf_counter() - t0
        if sweep:
            max_tokens = args.max_tokens
            args.max_tokens = args.sweep_max_tokens
            try:
                sweep_records = await runner.run_all(sweep, sweep_rows, "sweep")
            finally:
                args.max_tokens = max_tokens
            sweep_summary = summarize(sweep_records, sweep, calib, args.schedule)
            result["sweep"] = {"n_questions": len(sweep_rows), "max_tokens": args.sweep_max_tokens,
                               **sweep_result(sweep_summary, sweep, fig_depths, args.sd_tokens),
                               "summary": sweep_summary, "records": sweep_records}
        if recorder is not None:
            result["traces"] = [str(p) for p in recorder.save(result["environment"])]
        result["calibration"] = calib.to_dict()
        result["timing"] = {"load_s": round(load_s, 2), "engine_load_s": pool.load_s, "calibration_s": round(calib.seconds, 2),
                            "main_run_s": round(run_s, 2), "total_s": round(time.perf_counter() - t_start, 2)}
        return result
    finally:
        await pool.close()


def print_summary(result: dict) -> None:
    for name, m in (result.get("summary") or {}).items():
        cm = m.get("cost_model") or {}
        acc = m["acceptance"]["rate"]
        print(f"{name:6s} accuracy {m['accuracy']:.0%}  mean {m['latency']['mean_s']:.2f}s  "
              f"p50 {m['latency']['p50_s']:.2f}s  p90 {m['latency']['p90_s']:.2f}s  {m['tokens_per_s']:.2f} tok/s  "
              f"speedup {_x(m.get('speedup_vs_ar'))}"
              + (f"  same answer as ar {m['same_answer_as_ar']:.0%}" if m.get("same_answer_as_ar") is not None else "")
              + (f"  step acceptance {acc:.2f} by depth {m['acceptance']['by_depth']}" if acc is not None else "")
              + (f"  accepted drafts {m['strict']['accepted_drafts']} (not equal {m['strict']['not_equal']}, "
                 f"guard would reject {m['strict']['guard_rejects']})" if m.get("strict") else "")
              + (f"  predicted {_x(cm.get('predicted_speedup'))} (g={cm['g']}"
                 + (f", best {cm['best_g']}" if cm.get("best_g") else "") + f", b={cm['b']}" + (f" policy's {cm['b_policy']}" if cm.get("b_policy") is not None else "")
                 + f", c={cm['c']}, r={cm['r']})"
                 if cm else "")
              + (f"  depths chosen {m['depths_chosen']['cycles_by_depth']} probes {m['depths_chosen']['probes']}"
                 if m.get("depths_chosen") else ""))
    for e in (result.get("sweep") or {}).get("equal_budget", []):
        print(f"budget {e['budget']}: sd {_x(e['sd_speedup'])}, best {e['best_lr']} {_x(e['best_lr_speedup'])}"
              f" -> {e['winner']}")


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def publish(result: dict, out: str) -> None:
    """bench.json, bench.md and the figures written under `out`; the summary and the paths printed."""
    from benchmarks.bench.report import write_report

    paths = write_report(result, out)
    print_summary(result)
    print(f"wrote {', '.join(str(p) for p in paths)}")


def cmd_bench(args) -> int:
    from deployments.model_cache import ModelNotAvailable

    try:
        result = asyncio.run(run_bench(args))
    except (ModelNotAvailable, ValueError, FileNotFoundError) as exc:
        print(f"lookahead bench run: {exc}", file=sys.stderr)
        return 2
    publish(result, args.out)
    return 0

