"""ar / sd / lr / lr+sd on the vLLM engine, in one run.

Target on vLLM (default Qwen2.5-Coder-0.5B-Instruct), draft on the transformers engine
(default SmolLM2-135M-Instruct), greedy decoding, exact verifier (lossless: every mode must
print the same text, which the script checks). sd = the target with vLLM ngram token
speculation; lr+sd = LR over that target. Questions run one at a time (latency, not
throughput); the prefix cache is reset before each mode so no mode reuses another's KV.

    python -m benchmarks.vllm_modes            # table on stdout, JSON in benchmarks/out/
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def questions(n: int) -> list[str]:
    path = ROOT / "tests" / "fixtures" / "gsm8k_small.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["question"] for r in rows[:n]]


async def run_mode(mode: str, target, draft, prompts, args) -> dict:
    from orchestrator.lookahead import LookaheadParams, generate
    from verifier.exact import ExactVerifier

    lr = mode.startswith("lr")
    params = LookaheadParams(mode="lr" if lr else "ar", depth=args.depth, max_tokens=args.max_tokens,
                             max_step_tokens=args.max_step_tokens)
    await target.reset_prefix_cache()
    before = target.token_acceptance()
    results, walls = [], []
    for i, prompt in enumerate(prompts):
        t0 = time.perf_counter()
        results.append(await generate(target, prompt, params, draft if lr else None,
                                      ExactVerifier() if lr else None, request_id=f"{mode}-{i}"))
        walls.append(time.perf_counter() - t0)
    after = target.token_acceptance()
    drafted = after["draft_tokens"] - before["draft_tokens"]
    accepted = after["accepted_tokens"] - before["accepted_tokens"]
    spec_steps = after["spec_steps"] - before["spec_steps"]
    tokens = sum(r.stats.tokens for r in results)
    verified = sum(r.stats.verified_steps for r in results)
    out = {
        "mode": mode,
        "wall_s": round(sum(walls), 2),
        "per_question_s": [round(w, 2) for w in walls],
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
    print(f"  {mode:6s} {out['wall_s']:8.1f} s  {tokens} tokens", flush=True)
    return out


async def bench(args) -> dict:
    from deployments.config import EngineConfig
    from deployments.engines.hf import HFEngine
    from deployments.engines.vllm_engine import VLLMEngine
    from orchestrator.types import Prompt, SamplingParams, StepRequest

    prompts = [Prompt(messages=[{"role": "user", "content": q}]) for q in questions(args.n)]
    draft = HFEngine(args.draft, device="cpu") if args.draft_engine == "hf" else None
    kwargs = {"max_model_len": args.max_model_len}
    rows: dict[str, dict] = {}
    start = {}
    for spec, modes in (("none", ("ar", "lr")), ("ngram", ("sd", "lr+sd"))):
        t0 = time.perf_counter()
        target = VLLMEngine(EngineConfig(model=args.target, engine="vllm", token_speculation=spec,
                                         num_speculative_tokens=args.num_speculative_tokens, engine_kwargs=kwargs))
        start[spec] = round(time.perf_counter() - t0, 1)
        try:
            if draft is None:  # the draft on its own vLLM engine would be a second engine at once
                raise SystemExit("only --draft-engine hf is supported on this box")
            # warm both engines (first calls pay one-off costs)
            warm = StepRequest(prompts[0], [], SamplingParams(), 8, 8, "warm")
            await target.generate_steps([warm])
            await draft.generate_steps([warm])
            print(f"target {args.target} (vLLM, token_speculation={spec}) started in {start[spec]} s", flush=True)
            for mode in modes:
                rows[mode] = await run_mode(mode, target, draft, prompts, args)
        finally:
            await target.shutdown()
    ar = rows["ar"]
    for r in rows.values():
        r["speedup_vs_ar"] = round(ar["wall_s"] / r["wall_s"], 3)
        r["same_text_as_ar"] = r["texts"] == ar["texts"]
    return {
        "config": {**vars(args), "platform": platform.machine(), "cpus": len(os.sched_getaffinity(0)),
                   "engine_start_s": start, "greedy": True, "verifier": "exact",
                   "draft_engine": "hf (transformers, fp32, CPU)", "target_engine": "vllm (AsyncLLM)"},
        "modes": rows,
    }


def table(result: dict) -> str:
    head = f"{'mode':7s}{'wall s':>9s}{'tok/s':>8s}{'speedup':>9s}{'step acc':>10s}{'tok acc':>9s}{'same':>6s}"
    lines = [head, "-" * len(head)]
    for r in result["modes"].values():
        sa = "-" if r["step_acceptance"] is None else f"{r['step_acceptance']:.2f}"
        ta = "-" if r["token_acceptance"] is None else f"{r['token_acceptance']:.2f}"
        lines.append(f"{r['mode']:7s}{r['wall_s']:9.1f}{r['tok_per_s']:8.2f}{r['speedup_vs_ar']:9.2f}"
                     f"{sa:>10s}{ta:>9s}{'yes' if r['same_text_as_ar'] else 'NO':>6s}")
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
