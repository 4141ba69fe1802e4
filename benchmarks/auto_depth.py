"""The adaptive depth (`depth: auto`) against fixed depths and plain target decoding, in process.

    python -m benchmarks.auto_depth [--pair qwen|smol] [--questions 3] [--max-tokens 96] [--depths 2,4]

Per question, greedy, sync schedule: ar, lr at each fixed depth, lr auto. Prints wall time,
speed vs ar, step acceptance, the depths auto chose (cycles per g, probes) and its last
reason; writes benchmarks/out/auto_depth-<pair>-<verifier>.json. Pairs: "qwen", SmolLM2-135M
drafting for Qwen2.5-0.5B (different tokenizers: exact acceptance near 0, speculation cannot
pay); "smol", SmolLM2-135M in bf16 drafting for itself in fp32 (most steps identical). With the
exact verifier every mode must write the same text as ar; that is checked.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from benchmarks.data import DEFAULT_DATA, load_questions

PAIRS = {"qwen": (("qwen2.5-0.5b", "auto"), ("smollm2-135m", "auto")),
         "smol": (("smollm2-135m", "float32"), ("smollm2-135m", "bfloat16"))}


async def run(args) -> dict:
    from deployments.config import EngineConfig, VerifierConfig
    from deployments.engines.factory import build_engine
    from deployments.pipeline import build_verifier
    from orchestrator.lookahead import LookaheadParams, generate
    from orchestrator.types import Prompt

    (tm, td), (dm, dd) = PAIRS[args.pair]
    target = build_engine(EngineConfig(model=tm, dtype=td))
    draft = build_engine(EngineConfig(model=dm, dtype=dd))
    verifier = build_verifier(VerifierConfig(kind=args.verifier), target=target)
    modes = [("ar", 0)] + [(f"lr g={g}", g) for g in args.depths] + [("lr auto", "auto")]
    rows = load_questions(args.data, args.questions)
    warm = Prompt(messages=[{"role": "user", "content": "Say hi."}])
    await generate(target, warm, LookaheadParams(mode="lr", depth=1, max_tokens=16), draft, verifier)
    out: dict = {m: [] for m, _ in modes}
    for row in rows:
        prompt = Prompt(messages=[{"role": "user", "content": row["question"]}])
        texts = {}
        for name, depth in modes:
            params = LookaheadParams(mode="ar" if name == "ar" else "lr", depth=depth or 1,
                                     max_tokens=args.max_tokens, max_step_tokens=args.max_step_tokens)
            t0 = time.perf_counter()
            r = await generate(target, prompt, params, draft if name != "ar" else None, verifier)
            wall = time.perf_counter() - t0
            texts[name] = r.text
            st = r.stats
            out[name].append({"wall_s": wall, "tokens": st.tokens, "verified": st.verified_steps,
                              "accepted": st.accepted_steps, "depth_counts": st.depth_counts,
                              "probes": st.probes, "policy_log": st.policy_log,
                              "reason": st.policy.get("reason")})
            print(f"  {name:9s} {wall:7.2f}s  {st.tokens} tokens  accepted {st.accepted_steps}/{st.verified_steps}"
                  + (f"  depths {st.depth_counts} probes {st.probes}" if name == "lr auto" else ""), flush=True)
        if args.verifier == "exact":
            assert len(set(texts.values())) == 1, "greedy + exact: every mode must equal ar"
    ar_wall = sum(r["wall_s"] for r in out["ar"])
    summary = {}
    for name, recs in out.items():
        wall = sum(r["wall_s"] for r in recs)
        verified = sum(r["verified"] for r in recs)
        summary[name] = {"wall_s": round(wall, 2), "speed_vs_ar": round(ar_wall / wall, 3),
                         "acceptance": round(sum(r["accepted"] for r in recs) / verified, 3) if verified else None}
    return {"pair": args.pair, "verifier": args.verifier, "questions": len(rows), "max_tokens": args.max_tokens,
            "summary": summary, "runs": out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", choices=sorted(PAIRS), default="qwen")
    p.add_argument("--verifier", default="exact")
    p.add_argument("--questions", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--max-step-tokens", type=int, default=100)
    p.add_argument("--depths", type=lambda s: [int(x) for x in s.split(",") if x], default=[2, 4])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--out", default="benchmarks/out")
    args = p.parse_args()
    result = asyncio.run(run(args))
    print(f"\n{args.pair} pair, {args.verifier} verifier, {result['questions']} questions x {args.max_tokens} tokens")
    print(f"{'mode':10s} {'wall':>8s} {'vs ar':>7s} {'acceptance':>11s}")
    for name, s in result["summary"].items():
        acc = "-" if s["acceptance"] is None else f"{s['acceptance']:.2f}"
        print(f"{name:10s} {s['wall_s']:7.1f}s {s['speed_vs_ar']:6.2f}x {acc:>11s}")
    path = Path(args.out) / f"auto_depth-{args.pair}-{args.verifier}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
