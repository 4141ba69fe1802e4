"""ar / sd / lr / lr+sd on the vLLM engine, in one run.

Target on vLLM (default Qwen2.5-Coder-0.5B-Instruct), draft on the transformers engine
(default SmolLM2-135M-Instruct), greedy decoding, exact verifier (lossless: every mode must
print the same text, which the script checks). sd = the target with vLLM ngram token
speculation; lr+sd = LR over that target. Questions run one at a time (latency, not
throughput), modes interleaved per question; the prefix cache is reset before each run
so no run reuses another's KV. The 1-minute load average is recorded next to each run:
on a shared box, compare modes only at similar load.

    python -m benchmarks.bench.vllm_modes            # table on stdout, JSON in benchmarks/out/
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cpu_seconds() -> float:
    """User+system CPU time of this process and its children (the vLLM engine core and
    workers): less sensitive than wall time to other work on a shared CPU."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def questions(n: int) -> list[str]:
    path = ROOT / "tests" / "fixtures" / "gsm8k_small.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["question"] for r in rows[:n]]


async def run_modes(modes, target, draft, prompts, args) -> dict[str, dict]:
    """Every question under each mode in turn (interleaved, so CPU-load drift on a shared box
    hits the modes alike); the prefix cache is reset before each generation."""
    from orchestrator.lookahead import LookaheadParams, generate
    from verifier.exact import ExactVerifier

    runs: dict[str, list] = {m: [] for m in modes}
    for i, prompt in enumerate(prompts):
        for mode in modes:
            lr = mode.startswith("lr")
            params = LookaheadParams(mode="lr" if lr else "ar", depth=args.depth, max_tokens=args.max_tokens,
                                     max_step_tokens=args.max_step_tokens)
            await target.reset_prefix_cache()
            before = target.token_acceptance()
            load = os.getloadavg()[0]
            c0, t0 = cpu_seconds(), time.perf_counter()
            result = await generate(target, prompt, params, draft if lr else None,
                                    ExactVerifier() if lr else None, request_id=f"{mode}-{i}")
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            runs[mode].append((result, wall, before, target.token_acceptance(), load, cpu))
            print(f"  q{i} {mode:9s} {wall:7.1f} s  cpu {cpu:6.1f} s  {result.stats.tokens} tokens  load {load:.1f}",
                  flush=True)
    return {mode: summarize(mode, rs) for mode, rs in runs.items()}


def summarize(mode: str, runs: list) -> dict:
    results = [r[0] for r in runs]
    walls = [r[1] for r in runs]
    drafted = sum(a["draft_tokens"] - b["draft_tokens"] for _, _, b, a, *_ in runs)
    accepted = sum(a["accepted_tokens"] - b["accepted_tokens"] for _, _, b, a, *_ in runs)
    spec_steps = sum(a["spec_steps"] - b["spec_steps"] for _, _, b, a, *_ in runs)
    tokens = sum(r.stats.tokens for r in results)
    verified = sum(r.stats.verified_steps for r in results)
    return {
        "mode": mode,
        "wall_s": round(sum(walls), 2),
        "per_question_s": [round(w, 2) for w in walls],
        "min_question_s": round(min(walls), 2),
        "cpu_s": round(sum(r[5] for r in runs), 2),
        "load_avg_1m": [round(r[4], 2) for r in runs],
        "tokens": tokens,
        "tok_per_s": round(tokens / sum(walls), 3),
        "step_acceptance": round(sum(r.stats.accepted_steps for r in results) / verified, 4) if verified else None,
        "verified_steps": verified,
        "accepted_steps": sum(r.stats.accepted_steps for r in results),
        "cycles": sum(r.stats.cycles for r in results),
        "target_steps": sum(r.stats.target_steps for r in results),
        "draft_s": round(sum(r.stats.draft_s for r in results), 2),
        "target_s": round(sum(r.stats.target_s for r in results), 2),
        "token_acceptance": round(accepted / drafted, 4) if drafted else None,
        "token_mean_acceptance_length": round(1 + accepted / spec_steps, 3) if spec_steps else None,
        "texts": [r.text for r in results],
    }


async def bench(args) -> dict:
    from deployments.config import EngineConfig
    from deployments.engines.hf import HFEngine
    from deployments.engines.vllm_engine import VLLMEngine
    from orchestrator.types import Prompt, SamplingParams, StepRequest

    prompts = [Prompt(messages=[{"role": "user", "content": q}]) for q in questions(args.n)]
    draft = HFEngine(EngineConfig(model=args.draft, device="cpu")) if args.draft_engine == "hf" else None
    kwargs = {"max_model_len": args.max_model_len}
    rows: dict[str, dict] = {}
    start = {}
    phases = [("none", ("ar", "lr")), ("ngram", ("sd", "lr+sd"))]
    if args.repeat_ar:  # ar once more at the end: how far the shared box's load drifted meanwhile
        phases.append(("none", ("ar-repeat",)))
    for phase, (spec, modes) in enumerate(phases):
        t0 = time.perf_counter()
        target = VLLMEngine(EngineConfig(model=args.target, engine="vllm", token_speculation=spec,
                                         num_speculative_tokens=args.num_speculative_tokens, engine_kwargs=kwargs))
        start[f"{phase}:{spec}"] = round(time.perf_counter() - t0, 1)
        try:
            if draft is None:  # the draft on its own vLLM engine would be a second engine at once
                raise SystemExit("only --draft-engine hf is supported on this box")
            # warm both engines (first calls pay one-off costs)
            warm = StepRequest(prompts[0], [], SamplingParams(), 8, 8, "warm")
            await target.generate_steps([warm])
            await draft.generate_steps([warm])
            print(f"target {args.target} (vLLM, token_speculation={spec}) started in "
                  f"{start[f'{phase}:{spec}']} s", flush=True)
            rows.update(await run_modes(modes, target, draft, prompts, args))
        finally:
            await target.shutdown()
    ar = rows["ar"]
    for r in rows.values():
        r["speedup_vs_ar"] = round(ar["wall_s"] / r["wall_s"], 3)
        r["cpu_ratio_vs_ar"] = round(r["cpu_s"] / ar["cpu_s"], 3)
        r["same_text_as_ar"] = r["texts"] == ar["texts"]
    return {
        "config": {**vars(args), "platform": platform.machine(), "cpus": len(os.sched_getaffinity(0)),
                   "engine_start_s": start, "greedy": True, "verifier": "exact",
                   "draft_engine": "hf (transformers, fp32, CPU)", "target_engine": "vllm (AsyncLLM)"},
        "modes": rows,
    }


def table(result: dict) -> str:
    head = (f"{'mode':10s}{'wall s':>9s}{'tok/s':>8s}{'speedup':>9s}{'cpu s':>8s}{'cpu/ar':>8s}"
            f"{'step acc':>10s}{'tok acc':>9s}{'same':>6s}")
    lines = [head, "-" * len(head)]
    for r in result["modes"].values():
        sa = "-" if r["step_acceptance"] is None else f"{r['step_acceptance']:.2f}"
        ta = "-" if r["token_acceptance"] is None else f"{r['token_acceptance']:.2f}"
        lines.append(f"{r['mode']:10s}{r['wall_s']:9.1f}{r['tok_per_s']:8.2f}{r['speedup_vs_ar']:9.2f}"
                     f"{r['cpu_s']:8.1f}{r['cpu_ratio_vs_ar']:8.2f}{sa:>10s}{ta:>9s}{'yes' if r['same_text_as_ar'] else 'NO':>6s}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="qwen2.5-0.5b")
    p.add_argument("--draft", default="smollm2-135m")
    p.add_argument("--draft-engine", default="hf", choices=["hf"])
    p.add_argument("-n", type=int, default=5, help="GSM8K questions (tests/fixtures/gsm8k_small.jsonl)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--max-step-tokens", type=int, default=100)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--num-speculative-tokens", type=int, default=4)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--no-repeat-ar", dest="repeat_ar", action="store_false",
                   help="skip re-measuring ar after the other modes")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "vllm_modes.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = asyncio.run(bench(args))
    print(table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
