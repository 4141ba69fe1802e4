"""Orchestration overhead per LR cycle: through Ray Serve vs the in-process core, same engines.

    python -m benchmarks.serving.serve_overhead [--requests 12] [--transport both]

Both paths run identical greedy requests (same models, batch-invariant engines, so the same
steps and cycles), and the orchestrator-side wall time per cycle is compared. The difference is
what Serve adds per cycle: handle round trips to the draft and target deployments, argument
serialization and scheduling. Measured for handles passing results by reference (object store)
and with the interdeployment gRPC transport (`_by_reference=False`).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from benchmarks.data import load_questions

DATA = Path(__file__).resolve().parents[2] / "tests/fixtures/gsm8k_small.jsonl"


def overhead_config(by_reference: bool):
    from deployments.config import (AppConfig, EngineConfig, LookaheadDefaults, RoleConfig, RoleDeployment,
                                    ServerConfig, VerifierConfig)

    def role(dtype: str) -> RoleConfig:
        # the same torch thread count in both paths (Ray would pin a replica to 1 thread)
        return RoleConfig(engine=EngineConfig(model="smollm2-135m", dtype=dtype, batch_invariant=True,
                                              cpu_threads=os.cpu_count() or 1),
                          deployment=RoleDeployment(num_gpus=1, num_cpus=0))

    front = RoleDeployment(num_cpus=0, max_ongoing_requests=16)
    # many short steps: a cycle's engine work is small, so the per-cycle overhead stands out
    defaults = LookaheadDefaults(mode="lr", depth=2, max_step_tokens=8, max_tokens=48)
    return AppConfig(target=role("float32"), draft=role("bfloat16"), verifier=VerifierConfig(kind="exact"),
                     defaults=defaults, server=ServerConfig(orchestrator=front, ingress=front, http_port=8100,
                                                            grpc_port=9100, handle_by_reference=by_reference))


def per_cycle(records: list[dict]) -> list[float]:
    return [r["wall_s"] / r["cycles"] for r in records if r["cycles"]]


async def run_inprocess(cfg, questions: list[str]) -> list[dict]:
    from deployments.pipeline import Pipeline, lookahead_params
    from orchestrator.lookahead import generate
    from orchestrator.types import Prompt

    pipe = Pipeline.build(cfg)
    params = lookahead_params(cfg.defaults, token_speculation=cfg.target.engine.token_speculation)
    out = []
    for q in questions:
        r = await generate(pipe.target, Prompt(messages=[{"role": "user", "content": q}]), params,
                           pipe.draft, pipe.verifier)
        out.append({"text": r.text, **r.stats.to_dict()})
    return out


def run_serve(cfg, questions: list[str]) -> list[dict]:
    from deployments.api.request import RequestSpec
    from deployments.app import start_local
    from orchestrator.types import Prompt

    start_local(cfg, fake_gpus=2, quiet=True)
    from ray import serve

    orch = serve.get_deployment_handle("Orchestrator", app_name="lookahead")
    out = []
    for q in questions:
        r = orch.generate.remote(RequestSpec(f"overhead-{len(out)}", Prompt(messages=[{"role": "user", "content": q}]))).result()
        out.append({"text": r["text"], **r["stats"]})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=12)
    p.add_argument("--out", default="benchmarks/out/serve_overhead.json")
    args = p.parse_args(argv)
    questions = [row["question"] for row in load_questions(DATA, args.requests)]

    import ray
    from ray import serve

    inproc = asyncio.run(run_inprocess(overhead_config(True), questions))
    results = {"in_process": inproc}
    for name, by_ref in (("serve_by_reference", True), ("serve_grpc_transport", False)):
        results[name] = run_serve(overhead_config(by_ref), questions)
        serve.shutdown()
        ray.shutdown()
        time.sleep(2)
    base = statistics.median(per_cycle(inproc))
    summary = {"requests": len(questions), "cycles": sum(r["cycles"] for r in inproc),
               "in_process_ms_per_cycle": round(base * 1000, 2)}
    for name in ("serve_by_reference", "serve_grpc_transport"):
        same = all(a["text"] == b["text"] for a, b in zip(inproc, results[name]))
        diffs = [s - i for s, i in zip(per_cycle(results[name]), per_cycle(inproc))]
        summary[name] = {"ms_per_cycle": round(statistics.median(per_cycle(results[name])) * 1000, 2),
                         "overhead_ms_per_cycle_median": round(statistics.median(diffs) * 1000, 2),
                         "same_outputs": same}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "runs": results}, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
