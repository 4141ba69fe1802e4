"""Load and fault test: N concurrent streaming clients (HTTP and gRPC) for a bounded time on
loopback, while a draft or judge replica is killed halfway.

    python -m benchmarks.serving.loadtest --clients 32 --duration 120 --kill DraftEngine

Starts the application itself (local Ray, CPU, fake GPUs) so it can kill a replica; reports
requests sent, completed, failed and lost (never answered: must be 0), and p50/p99 latency.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import grpc
import httpx

from protos.lookahead.v1 import lookahead_pb2 as pb
from protos.lookahead.v1 import lookahead_pb2_grpc as pb_grpc

QUESTIONS = ["What is 17 + 25?", "Name three primary colours.", "What is 9 times 8?",
             "Why is the sky blue? One sentence.", "Spell 'cat' backwards."]


class Tally:
    def __init__(self) -> None:
        self.sent = self.completed = self.failed = 0
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def fail(self, why: str) -> None:
        self.failed += 1
        self.errors[why] = self.errors.get(why, 0) + 1


async def http_client(i: int, end: float, t: Tally, args) -> None:
    async with httpx.AsyncClient(base_url=args.url, timeout=args.request_timeout) as http:
        n = 0
        while time.monotonic() < end:
            body = {"model": "lookahead", "messages": [{"role": "user", "content": QUESTIONS[(i + n) % 5]}],
                    "max_tokens": args.max_tokens, "temperature": 0, "stream": True,
                    "lookahead": {"mode": "lr"}}
            n += 1
            t.sent += 1
            t0 = time.monotonic()
            try:
                async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
                    if resp.status_code != 200:
                        t.fail(f"http {resp.status_code}")
                        await asyncio.sleep(0.5)
                        continue
                    done = False
                    async for line in resp.aiter_lines():
                        if line.startswith("data: ") and '"error"' in line:
                            break
                        done = done or line == "data: [DONE]"
                    if done:
                        t.completed += 1
                        t.latencies.append(time.monotonic() - t0)
                    else:
                        t.fail("http stream error")
            except httpx.HTTPError as exc:
                t.fail(f"http {type(exc).__name__}")


async def grpc_client(i: int, end: float, t: Tally, args) -> None:
    async with grpc.aio.insecure_channel(args.grpc) as channel:
        stub = pb_grpc.LookaheadServiceStub(channel)
        n = 0
        while time.monotonic() < end:
            req = pb.GenerateRequest(messages=[pb.ChatMessage(role="user", content=QUESTIONS[(i + n) % 5])],
                                     max_tokens=args.max_tokens, temperature=0.0,
                                     lookahead=pb.LookaheadOptions(mode="lr"))
            n += 1
            t.sent += 1
            t0 = time.monotonic()
            try:
                last = None
                async for chunk in stub.GenerateStream(req, timeout=args.request_timeout):
                    last = chunk
                if last is not None and last.done:
                    t.completed += 1
                    t.latencies.append(time.monotonic() - t0)
                else:
                    t.fail("grpc stream ended early")
            except grpc.aio.AioRpcError as exc:
                t.fail(f"grpc {exc.code().name}")
                await asyncio.sleep(0.5)


def load_config(http_port: int = 8000, grpc_port: int = 9000):
    """SmolLM2-135M draft (bf16) and target (fp32) plus a judge: small enough for 32 clients on CPU."""
    from deployments.config import (AppConfig, EngineConfig, LookaheadDefaults, RoleConfig, RoleDeployment,
                                    ServerConfig, VerifierConfig)

    def role(dtype: str) -> RoleConfig:
        return RoleConfig(engine=EngineConfig(model="smollm2-135m", dtype=dtype),
                          deployment=RoleDeployment(num_gpus=1, num_cpus=0, max_ongoing_requests=64,
                                                    max_queued_requests=256))

    front = RoleDeployment(num_cpus=0, max_ongoing_requests=128, max_queued_requests=256)
    return AppConfig(target=role("float32"), draft=role("bfloat16"), judge=role("float32"),
                     verifier=VerifierConfig(kind="exact"), defaults=LookaheadDefaults(depth=2),
                     server=ServerConfig(orchestrator=front, ingress=front, draft_timeout_s=30, judge_timeout_s=30,
                                         http_port=http_port, grpc_port=grpc_port))


def replica_actor(deployment: str) -> tuple[str, object] | None:
    """(name, actor handle) of one running replica of `deployment` of the lookahead app, or None."""
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(f"SERVE_REPLICA::lookahead#{deployment}#"):
            return actor["name"], ray.get_actor(actor["name"], namespace=actor["namespace"])
    return None


def kill_one(deployment: str) -> str:
    import ray

    found = replica_actor(deployment)
    if found is None:
        return ""
    ray.kill(found[1], no_restart=True)
    return found[0]


async def run(args) -> dict:
    tallies = {"http": Tally(), "grpc": Tally()}
    start = time.monotonic()
    end = start + args.duration
    tasks = [asyncio.create_task(http_client(i, end, tallies["http"], args) if i % 2 == 0
                                 else grpc_client(i, end, tallies["grpc"], args)) for i in range(args.clients)]
    killed = ""
    if args.kill != "none":
        await asyncio.sleep(args.duration / 2)
        killed = await asyncio.to_thread(kill_one, args.kill)
        print(f"t={time.monotonic() - start:.0f}s killed {killed or 'nothing (no replica found)'}", flush=True)
    # every client stops sending at `end`; what is still unanswered after the grace period is lost
    done, pending = await asyncio.wait(tasks, timeout=args.duration + args.grace - (time.monotonic() - start))
    for task in pending:
        task.cancel()
    report = {"clients": args.clients, "duration_s": args.duration, "killed": killed, "max_tokens": args.max_tokens}
    for name, t in tallies.items():
        lost = t.sent - t.completed - t.failed
        lat = sorted(t.latencies)
        report[name] = {"sent": t.sent, "completed": t.completed, "failed": t.failed, "lost": lost,
                        "errors": t.errors,
                        "p50_s": round(statistics.median(lat), 3) if lat else None,
                        "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3) if lat else None}
    total = {k: sum(report[n][k] for n in tallies) for k in ("sent", "completed", "failed", "lost")}
    report["total"] = total
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=120)
    p.add_argument("--grace", type=float, default=180, help="seconds to wait for in-flight requests at the end")
    p.add_argument("--kill", default="DraftEngine", help="deployment whose replica dies halfway, or 'none'")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--request-timeout", type=float, default=300)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=9000)
    p.add_argument("--out", default="benchmarks/out/loadtest.json")
    args = p.parse_args(argv)
    args.url, args.grpc = f"http://127.0.0.1:{args.http_port}", f"127.0.0.1:{args.grpc_port}"
    if args.clients < 1 or args.duration <= 0:
        p.error("--clients and --duration must be positive")

    from deployments.app import start_local

    start_local(load_config(args.http_port, args.grpc_port), fake_gpus=3, quiet=True)
    report = asyncio.run(run(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if report["total"]["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
