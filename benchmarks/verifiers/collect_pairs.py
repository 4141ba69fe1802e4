"""Collect (draft step, target step) pairs from real runs, for labelling.

For each question the target answers greedily, step by step, exactly as `ar` mode does; at every
position each draft engine writes its own step from the same prefix (the target's accepted steps),
which is the pair the orchestrator hands its verifier at depth 0. Nothing is judged here: the
pairs go to tests/fixtures/step_pairs.jsonl once a person has labelled them.

    python -m benchmarks.verifiers.collect_pairs --data ../shared/data/gsm8k/train.jsonl --start 7400 \\
        --questions 12 --drafts smollm2-135m,qwen2.5-0.5b@0.8 --out /tmp/pairs_raw.jsonl

A draft "NAME@T" samples at temperature T (seeded per question and position): the target model
sampled is a draft that rewrites steps in its own words and sometimes changes a number or an
item, which the greedy small draft rarely reaches.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

#: SmolLM2 writes blank-line separated steps only when asked to
SYSTEM = "Solve the problem step by step. Put a blank line between steps."


def parse_draft(spec: str) -> tuple[str, float]:
    name, _, temp = spec.partition("@")
    return name, float(temp) if temp else 0.0


async def collect(args) -> int:
    from deployments.config import EngineConfig
    from deployments.engines.factory import build_engine
    from orchestrator.types import Prompt, SamplingParams, StepRequest

    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    if args.rows:
        picked = [int(x) for x in args.rows.split(",") if x.strip()]
    else:
        picked = list(range(args.start, min(len(rows), args.start + args.questions)))
    target = build_engine(EngineConfig(model=args.target, device="cpu"))
    drafts = []
    for spec in args.drafts.split(","):
        name, temp = parse_draft(spec.strip())
        engine = target if name == args.target else build_engine(EngineConfig(model=name, device="cpu"))
        drafts.append((spec.strip(), name, temp, engine))
    out = open(args.out, "a", encoding="utf-8")
    counts = []

    async def one(qi: int) -> None:
        question = rows[qi]["question"]
        prompt = Prompt(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
        prefix = []
        t0 = time.perf_counter()
        for pos in range(args.max_steps):
            if sum(len(s.token_ids) for s in prefix) >= args.max_tokens:
                break

            def req(temp: float) -> StepRequest:
                sampling = SamplingParams(temperature=temp, seed=qi * 100 + pos if temp else None)
                return StepRequest(prompt, list(prefix), sampling, args.max_step_tokens, args.max_tokens)

            tstep, *dsteps = await asyncio.gather(target.generate_steps([req(0.0)]),
                                                  *(engine.generate_steps([req(temp)])
                                                    for _, _, temp, engine in drafts))
            tstep = tstep[0]
            for (spec, _, _, _), dstep in zip(drafts, dsteps):
                dstep = dstep[0]
                out.write(json.dumps({
                    "question_index": qi, "position": pos, "draft_model": spec, "target_model": args.target,
                    "question": question, "prefix": [s.text for s in prefix],
                    "draft": dstep.text, "draft_stop": dstep.stop_reason,
                    "target": tstep.text, "target_stop": tstep.stop_reason}, ensure_ascii=False) + "\n")
                counts.append(qi)
            out.flush()
            prefix.append(tstep)
            if tstep.finished:
                break
        print(f"question {qi}: {len(prefix)} target steps in {time.perf_counter() - t0:.0f}s "
              f"({len(counts)} pairs so far)", file=sys.stderr, flush=True)

    # the questions run side by side: the engines batch their concurrent calls, which on a
    # shared CPU is several times the throughput of one row at a time
    try:
        await asyncio.gather(*(one(qi) for qi in picked))
    finally:
        out.close()
    for _, _, _, engine in drafts + [(None, None, None, target)]:
        shutdown = getattr(engine, "shutdown", None)
        if shutdown is not None:
            await shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.verifiers.collect_pairs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="GSM8K-format JSONL (use the train split)")
    p.add_argument("--start", type=int, default=7400, help="first row of --data")
    p.add_argument("--questions", type=int, default=12)
    p.add_argument("--rows", default=None, metavar="I,J,...",
                   help="these rows of --data instead of --start/--questions (e.g. questions with a comparative)")
    p.add_argument("--target", default="qwen2.5-0.5b")
    p.add_argument("--drafts", default="smollm2-135m,qwen2.5-0.5b@0.8",
                   help="comma-separated draft models; NAME@T samples at temperature T")
    p.add_argument("--max-steps", type=int, default=8)
    p.add_argument("--max-step-tokens", type=int, default=100)
    p.add_argument("--max-tokens", type=int, default=400)
    p.add_argument("--out", required=True, help="JSONL, appended to")
    return asyncio.run(collect(p.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
