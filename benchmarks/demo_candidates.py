"""Pick the demo's draft model and verifier by measurement: for each candidate (draft, verifier),
answer a few GSM8K questions in lr mode (depth auto, greedy, the demo's system prompt) and in ar
mode, in process, and report how many drafts were accepted, whether the answer finished, whether
its final number is ar's, and the wall time against ar.

    python -m benchmarks.demo_candidates --questions 2
    python -m benchmarks.demo_candidates --candidates smollm2-135m:target-score,smollm2-135m:embedding

Writes benchmarks/out/demo_candidates.json. The target is the demo's (qwen2.5-0.5b); llm-judge
uses the target as its judge. Timings share the machine with whatever else runs on it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CANDIDATES = ("smollm2-135m:exact,smollm2-135m:embedding,smollm2-135m:target-score,"
                      "smollm2-135m:llm-judge")


async def run(args) -> dict:
    from benchmarks.data import load_questions
    from benchmarks.grading import extract_answer, is_correct
    from deployments.cli.serve import DEMO_SYSTEM
    from deployments.config import EngineConfig, VerifierConfig
    from deployments.engines.factory import build_engine
    from deployments.pipeline import build_verifier
    from orchestrator.lookahead import LookaheadParams, generate
    from orchestrator.types import Prompt

    rows = load_questions(args.data, args.questions)
    target = build_engine(EngineConfig(model=args.target, device="cpu"))
    drafts: dict[str, object] = {}
    out = {"target": args.target, "max_tokens": args.max_tokens, "questions": [r["index"] for r in rows],
           "ar": [], "candidates": {}}

    def prompt(row) -> Prompt:
        return Prompt(messages=[{"role": "system", "content": DEMO_SYSTEM}, {"role": "user", "content": row["question"]}])

    def record(row, result, wall) -> dict:
        pred = extract_answer(result.text)
        return {"question": row["index"], "wall_s": round(wall, 2), "tokens": result.stats.tokens,
                "finish_reason": result.finish_reason, "predicted": pred, "correct": is_correct(pred, row["gold"]),
                "accepted": result.stats.accepted_steps, "verified": result.stats.verified_steps,
                "depth_counts": result.stats.depth_counts, "probes": result.stats.probes,
                "scores": [(s.source, s.verifier, s.score) for s in result.steps if s.verifier]}

    for row in rows:
        t0 = time.perf_counter()
        res = await generate(target, prompt(row), LookaheadParams(mode="ar", max_tokens=args.max_tokens))
        out["ar"].append(record(row, res, time.perf_counter() - t0))
        print(f"ar q{row['index']}: {out['ar'][-1]['wall_s']}s {res.stats.tokens} tokens, "
              f"answer {out['ar'][-1]['predicted']}", file=sys.stderr, flush=True)
    for cand in args.candidates.split(","):
        draft_name, kind = cand.strip().split(":")
        if draft_name not in drafts:
            drafts[draft_name] = build_engine(EngineConfig(model=draft_name, device="cpu"))
        verifier = build_verifier(VerifierConfig(kind=kind), target=target, judge=target)
        recs = []
        for row in rows:
            t0 = time.perf_counter()
            res = await generate(target, prompt(row), LookaheadParams(mode="lr", depth="auto", max_tokens=args.max_tokens),
                                 drafts[draft_name], verifier)
            recs.append(record(row, res, time.perf_counter() - t0))
            print(f"{cand} q{row['index']}: {recs[-1]['wall_s']}s, accepted {recs[-1]['accepted']}/"
                  f"{recs[-1]['verified']}, depths {recs[-1]['depth_counts']} probes {recs[-1]['probes']}, "
                  f"answer {recs[-1]['predicted']}", file=sys.stderr, flush=True)
        ar_wall = sum(r["wall_s"] for r in out["ar"])
        out["candidates"][cand] = {
            "records": recs, "accepted": sum(r["accepted"] for r in recs), "verified": sum(r["verified"] for r in recs),
            "finished": sum(r["finish_reason"] == "stop" for r in recs),
            "same_answer_as_ar": sum(r["predicted"] == a["predicted"] for r, a in zip(recs, out["ar"])),
            "wall_vs_ar": round(sum(r["wall_s"] for r in recs) / ar_wall, 3) if ar_wall else None}
    for engine in [target, *drafts.values()]:
        shutdown = getattr(engine, "shutdown", None)
        if shutdown is not None:
            await shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks.data import DEFAULT_DATA

    p = argparse.ArgumentParser(prog="python -m benchmarks.demo_candidates", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--questions", type=int, default=2)
    p.add_argument("--target", default="qwen2.5-0.5b")
    p.add_argument("--candidates", default=DEFAULT_CANDIDATES, help="comma-separated DRAFT:VERIFIER")
    p.add_argument("--max-tokens", type=int, default=400)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "demo_candidates.json"))
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    n = len(result["questions"])
    print(f"{n} questions, target {result['target']}, depth auto, greedy, max {result['max_tokens']} tokens")
    print("| draft:verifier | accepted / checked drafts | finished | same final answer as ar | wall vs ar |")
    print("|---|---|---|---|---|")
    for cand, c in result["candidates"].items():
        print(f"| {cand} | {c['accepted']} / {c['verified']} | {c['finished']}/{n} | {c['same_answer_as_ar']}/{n} | "
              f"{c['wall_vs_ar']:.2f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
