"""Throughput under concurrent load: N streaming clients against one application, modes in
alternating rounds on the same warm engines.

    python -m benchmarks.serving.throughput --profile cpu-vllm --modes ar,lr --clients 8 --duration 120 --rounds 3

Starts the profile's application on local Ray, sends one warm-up request per mode, then runs
rounds: in each, every mode in turn (order rotated per round) gets `--duration` seconds of N
clients, each sending GSM8K questions one after another over the streaming OpenAI API
(`lookahead: {"mode": M}`; the profile's depth, `auto` in every shipped profile) and waiting for
each answer. A mode's throughput is the completion tokens of its requests over the time from
its first request to its last answer (requests still running at the deadline finish and
count). Prints and writes (JSON) tokens/s per mode and round, the ratio to the first mode per
round and overall, and the depths the policy chose.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

from benchmarks.data import DEFAULT_DATA, load_questions


async def client(i: int, mode: str, end: float, questions: list[str], args, out: dict) -> None:
    async with httpx.AsyncClient(base_url=args.url, timeout=args.request_timeout) as http:
        n = 0
        while n == 0 or time.monotonic() < end:  # at least one request each
            body = {"model": "lookahead", "max_tokens": args.max_tokens, "temperature": 0, "stream": True,
                    "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": questions[(i * 7 + n) % len(questions)]}],
                    "lookahead": {"mode": mode}}
            n += 1
            usage = None
            async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
                if resp.status_code != 200:
                    out["errors"] += 1
                    await asyncio.sleep(1.0)
                    continue
                async for line in resp.aiter_lines():
                    if line.startswith("data: {") and '"usage"' in line:
                        chunk = json.loads(line[6:])
                        usage = chunk.get("usage") or usage
            if not usage:
                out["errors"] += 1
                continue
            out["requests"] += 1
            out["tokens"] += usage["completion_tokens"]
            st = (usage.get("lookahead") or {})
            for g, c in enumerate(st.get("depth_counts") or []):
                out["depth_counts"] += [0] * (g + 1 - len(out["depth_counts"]))
                out["depth_counts"][g] += c
            out["probes"] += st.get("probes") or 0
            out["accepted"] += st.get("accepted_steps") or 0
            out["verified"] += st.get("verified_steps") or 0
            policy = st.get("policy") or {}
            if policy:  # what the depth policy last decided in this answer, and on what costs
                out["probe_costs"].append(policy.get("probe_cost"))
                out["last_reason"] = policy.get("reason")


async def one_round(mode: str, questions: list[str], args) -> dict:
    out = {"mode": mode, "requests": 0, "tokens": 0, "errors": 0, "depth_counts": [], "probes": 0,
           "accepted": 0, "verified": 0, "probe_costs": [], "last_reason": None}
    t0 = time.monotonic()
    await asyncio.gather(*(client(i, mode, t0 + args.duration, questions, args, out) for i in range(args.clients)))
    out["seconds"] = round(time.monotonic() - t0, 2)
    out["tok_s"] = round(out["tokens"] / out["seconds"], 3)
    costs = sorted(c for c in out.pop("probe_costs") if c is not None)
    out["probe_cost_median"] = costs[len(costs) // 2] if costs else None
    return out


async def run(args) -> dict:
    questions = [r["question"] for r in load_questions(args.data, 40)]
    for mode in args.modes:  # warm every path (engines, verifier, the policy's history)
        w = dict(vars(args))
        w.update(duration=0.0, clients=1)
        await one_round(mode, questions, argparse.Namespace(**w))
    rounds = []
    for r in range(args.rounds):
        shift = r % len(args.modes)
        for mode in args.modes[shift:] + args.modes[:shift]:
            res = await one_round(mode, questions, args)
            res["round"] = r
            rounds.append(res)
            print(f"round {r} {mode:6s} {res['tok_s']:7.2f} tok/s  {res['requests']} requests  {res['tokens']} tokens "
                  f"in {res['seconds']:.0f}s  depths {res['depth_counts']} probes {res['probes']} "
                  f"accepted {res['accepted']}/{res['verified']} errors {res['errors']}"
                  + (f"\n  policy: probe cost (median) {res['probe_cost_median']}; last: {res['last_reason']}"
                     if res["last_reason"] else ""), flush=True)
    base = args.modes[0]
    summary = {}
    for mode in args.modes:
        mine = [x for x in rounds if x["mode"] == mode]
        tok, sec = sum(x["tokens"] for x in mine), sum(x["seconds"] for x in mine)
        per_round = [round(x["tok_s"] / y["tok_s"], 3) for x, y in
                     zip(mine, [x for x in rounds if x["mode"] == base]) if y["tok_s"]]
        summary[mode] = {"tok_s": round(tok / sec, 3) if sec else 0.0, "rounds": [x["tok_s"] for x in mine],
                         f"vs_{base}_by_round": per_round}
    for mode in args.modes:
        summary[mode][f"vs_{base}"] = round(summary[mode]["tok_s"] / summary[base]["tok_s"], 3)
    return {"profile": args.profile, "clients": args.clients, "duration_s": args.duration, "rounds": args.rounds,
            "max_tokens": args.max_tokens, "modes": args.modes, "summary": summary, "by_round": rounds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu-vllm")
    p.add_argument("--modes", type=lambda s: [m for m in s.split(",") if m], default=["ar", "lr"])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=120, help="seconds of new requests per mode and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--request-timeout", type=float, default=600)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--out", default="benchmarks/out/throughput.json")
    args = p.parse_args(argv)
    from deployments.app import start_local
    from deployments.profiles import PROFILES

    cfg = PROFILES[args.profile]
    args.url = f"http://127.0.0.1:{cfg.server.http_port}"
    t0 = time.monotonic()
    start_local(cfg, quiet=True)
    print(f"{args.profile} application ready in {time.monotonic() - t0:.0f}s", flush=True)
    try:
        report = asyncio.run(run(args))
    finally:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
