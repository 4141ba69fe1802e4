"""The first minute after ready: throughput and latency of N clients right after `/health` says
ready, then again once the engines are warm, with the engine replicas' start-up warm-up on and off.

    python -m benchmarks.serving.cold_start --profile cpu-vllm --clients 4 --window 60 --max-tokens 64

For each setting (`--warmup on,off`), in a fresh process: start the profile's application on a
private local Ray (free ports) from a background thread, poll `/health` until it answers 200, then
at once run the "cold" window: N clients, each sending GSM8K questions one after another (the
profile's default mode) while the window lasts, waiting for every answer; then the "warm" window,
the same load again. A window's throughput is the completion tokens of the requests it started
over the time from its start to its last answer; p50 is the median request latency. Prints a
table and writes JSON (`--out`).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from benchmarks.data import DEFAULT_DATA, load_questions
from benchmarks.serving.dashboard_snapshot import free_port


async def window(url: str, questions: list[str], args) -> dict:
    """N clients for `args.window` seconds of new requests; every request started is waited for."""
    latencies: list[float] = []
    totals = {"requests": 0, "tokens": 0, "errors": 0}
    t0 = time.monotonic()

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=args.request_timeout) as http:
            n = 0
            while time.monotonic() < t0 + args.window:
                body = {"model": "lookahead", "max_tokens": args.max_tokens, "temperature": 0,
                        "messages": [{"role": "user", "content": questions[(i * 7 + n) % len(questions)]}]}
                n += 1
                start = time.monotonic()
                r = await http.post("/v1/chat/completions", json=body)
                if r.status_code != 200:
                    totals["errors"] += 1
                    await asyncio.sleep(1.0)
                    continue
                latencies.append(time.monotonic() - start)
                totals["requests"] += 1
                totals["tokens"] += r.json()["usage"]["completion_tokens"]

    await asyncio.gather(*(client(i) for i in range(args.clients)))
    seconds = time.monotonic() - t0
    return {**totals, "seconds": round(seconds, 1), "tok_s": round(totals["tokens"] / seconds, 2),
            "p50_s": round(statistics.median(latencies), 1) if latencies else None,
            "max_s": round(max(latencies), 1) if latencies else None}


def one_setting(args) -> dict:
    """Start the application with warm-up on or off, then the cold and the warm window."""
    import ray

    from deployments.app import ray_init_args, start_local
    from deployments.profiles import PROFILES

    cfg = PROFILES[args.profile]
    on = args.warmup == "on"
    roles = {r: getattr(cfg, r).model_copy(update={"warmup": getattr(cfg, r).warmup.model_copy(update={"enabled": on})})
             for r in ("target", "draft", "judge") if getattr(cfg, r) is not None}
    cfg = cfg.model_copy(update={**roles, "server": cfg.server.model_copy(
        update={"http_port": free_port(), "grpc_port": free_port()})})
    url = f"http://127.0.0.1:{cfg.server.http_port}"
    questions = [r["question"] for r in load_questions(args.data, 40)]
    t0 = time.monotonic()
    ray.init(**ray_init_args(quiet=True))  # here, in the main thread; the app starts beside the probe
    starter = threading.Thread(target=start_local, args=(cfg,), kwargs={"quiet": True}, daemon=True)
    starter.start()
    while True:  # ready as a probe sees it: /health answers 200
        try:
            if httpx.get(f"{url}/health", timeout=20).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() - t0 > 900:
            raise SystemExit("the application was not ready within 900 s")
        time.sleep(0.5)
    ready_s = time.monotonic() - t0
    print(f"warm-up {args.warmup}: /health ready {ready_s:.0f} s after start", flush=True)
    try:
        cold = asyncio.run(window(url, questions, args))
        print(f"  cold window: {cold}", flush=True)
        warm = asyncio.run(window(url, questions, args))
        print(f"  warm window: {warm}", flush=True)
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    return {"warmup": args.warmup, "ready_s": round(ready_s, 1), "cold": cold, "warm": warm}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu-vllm")
    p.add_argument("--warmup", default="on,off", help="settings to run, each in its own process: on, off")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--window", type=float, default=60, help="seconds of new requests per window")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--request-timeout", type=float, default=600)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--out", default="benchmarks/out/cold_start.json")
    args = p.parse_args(argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    settings = [s for s in args.warmup.split(",") if s]
    if len(settings) == 1:  # a child: one setting, its result in --out
        Path(args.out).write_text(json.dumps(one_setting(args)))
        return 0
    results = []
    for setting in settings:  # each in a fresh process: its own Ray, nothing warm carried over
        part = f"{args.out}.{setting}"
        cmd = [sys.executable, "-m", "benchmarks.serving.cold_start", *(argv if argv is not None else sys.argv[1:]),
               "--warmup", setting, "--out", part]
        subprocess.run(cmd, check=True)
        results.append(json.loads(Path(part).read_text()))
        Path(part).unlink()
    print(f"\n{args.profile}, {args.clients} clients, {args.window:g} s windows, max_tokens {args.max_tokens}")
    print(f"{'warm-up':8s} {'ready s':>8s} {'cold tok/s':>11s} {'cold p50 s':>11s} {'warm tok/s':>11s} {'warm p50 s':>11s}")
    for r in results:
        print(f"{r['warmup']:8s} {r['ready_s']:8.0f} {r['cold']['tok_s']:11.2f} {r['cold']['p50_s']!s:>11s} "
              f"{r['warm']['tok_s']:11.2f} {r['warm']['p50_s']!s:>11s}")
    report = {"profile": args.profile, "clients": args.clients, "window_s": args.window,
              "max_tokens": args.max_tokens, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
