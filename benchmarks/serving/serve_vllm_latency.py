"""Latency of one lossless request on the vLLM engines: through Ray Serve vs in-process.

    python -m benchmarks.serving.serve_vllm_latency [--repeats 3] [--max-tokens 112] [--mode lr+sd]

The same application config (the `cpu-vllm` profile: vLLM target with n-gram token speculation,
vLLM draft, exact verifier, greedy) runs first in-process (`deployments.pipeline.Pipeline`, the
engines in this process) and then as the Serve application, called over HTTP with the openai SDK
the way a user would. Each path gets one warm-up request, then `--repeats` timed ones; the
answers must be identical across paths (lossless: both are the target's greedy output). The
ratio is measured side by side in one run; one vLLM engine pair is alive at a time.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import time
from pathlib import Path

from benchmarks.data import load_questions

DATA = Path(__file__).resolve().parents[2] / "tests/fixtures/gsm8k_small.jsonl"


def in_process(cfg, messages: list[dict], mode: str, repeats: int) -> tuple[list[float], str]:
    from deployments.api.request import RequestOptions
    from deployments.pipeline import Pipeline, lookahead_params
    from orchestrator.lookahead import generate
    from orchestrator.types import Prompt

    pipe = Pipeline.build(cfg)
    params = lookahead_params(cfg.defaults, RequestOptions(mode=mode),
                              token_speculation=cfg.target.engine.token_speculation)
    try:
        async def once() -> tuple[float, str]:
            t0 = time.perf_counter()
            r = await generate(pipe.target, Prompt(messages=messages), params, pipe.draft, pipe.verifier)
            return time.perf_counter() - t0, r.text

        async def run():
            await once()  # warm-up: first-request compilation and caches
            return [await once() for _ in range(repeats)]

        runs = asyncio.run(run())
    finally:
        for engine in (pipe.target, pipe.draft):
            engine.close()
        gc.collect()
    return [s for s, _ in runs], runs[-1][1]


def through_serve(cfg, messages: list[dict], mode: str, repeats: int) -> tuple[list[float], str, float]:
    import ray
    from openai import OpenAI
    from ray import serve

    from deployments.app import start_local

    t0 = time.perf_counter()
    start_local(cfg, quiet=True)
    startup = time.perf_counter() - t0
    client = OpenAI(base_url=f"http://127.0.0.1:{cfg.server.http_port}/v1", api_key="bench", max_retries=0,
                    timeout=1200)

    def once() -> tuple[float, str]:
        t = time.perf_counter()
        r = client.chat.completions.create(model=cfg.server.served_model_name, messages=messages,
                                           max_tokens=cfg.defaults.max_tokens, temperature=0,
                                           extra_body={"lookahead": {"mode": mode}})
        return time.perf_counter() - t, r.choices[0].message.content

    try:
        once()
        runs = [once() for _ in range(repeats)]
    finally:
        serve.shutdown()
        ray.shutdown()
    return [s for s, _ in runs], runs[-1][1], startup


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=112)
    p.add_argument("--mode", default="lr+sd", choices=("ar", "sd", "lr", "lr+sd"))
    p.add_argument("--out", default="benchmarks/out/serve_vllm_latency.json")
    args = p.parse_args(argv)

    from deployments.profiles import PROFILES

    cfg = PROFILES["cpu-vllm"].model_copy(deep=True)
    cfg.defaults = cfg.defaults.model_copy(update={"max_tokens": args.max_tokens, "depth": 4})
    question = load_questions(DATA, 2)[1]["question"]
    messages = [{"role": "user", "content": question}]

    print(f"in-process: vLLM target + vLLM draft, {args.mode}, greedy, exact verifier ...", flush=True)
    local_s, local_text = in_process(cfg, messages, args.mode, args.repeats)
    print("through Serve (HTTP, openai SDK) ...", flush=True)
    serve_s, serve_text, startup = through_serve(cfg, messages, args.mode, args.repeats)
    summary = {
        "mode": args.mode, "max_tokens": args.max_tokens, "repeats": args.repeats, "machine": platform.node(),
        "in_process_ms": round(statistics.median(local_s) * 1000),
        "serve_http_ms": round(statistics.median(serve_s) * 1000),
        "serve_over_in_process": round(statistics.median(serve_s) / statistics.median(local_s), 3),
        "same_answer": local_text == serve_text, "serve_startup_s": round(startup, 1),
        "in_process_runs_ms": [round(s * 1000) for s in local_s], "serve_runs_ms": [round(s * 1000) for s in serve_s],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if summary["same_answer"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
