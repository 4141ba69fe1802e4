"""Roles scale separately: load on one role makes Serve's autoscaler add a replica to that role
only, and sessions keep completing while it scales up and back down.

The real application on local Ray (CPU, fake GPUs), SmolLM2-135M as target and draft, every
role autoscaled between 1 and 2 replicas. Clients send target-only (`ar`) requests, so the
target is busy and the draft is idle: the target must go to 2 replicas while the draft, the
orchestrator and the ingress stay at 1; when the load drops to one client, the target goes back
to 1. The replica counts come from `serve.status()`; every request must succeed throughout.
"""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from deployments.config import (AppConfig, AutoscalingConfig, EngineConfig, LookaheadDefaults, RoleConfig,
                                RoleDeployment, ServerConfig)
from tests.support.serve_app import TEST_WARMUP

pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.timeout(1500)]
ROLES = {"TargetEngine": "target", "DraftEngine": "draft", "Orchestrator": "orchestrator", "Ingress": "ingress"}


def scaled(target: float, up: float = 1.0, down: float = 5.0) -> AutoscalingConfig:
    return AutoscalingConfig(min_replicas=1, max_replicas=2, target_ongoing_requests=target,
                             upscale_delay_s=up, downscale_delay_s=down)


def autoscaling_config() -> AppConfig:
    def engine(gpus: float) -> RoleConfig:
        # one ongoing call per replica is its target: a few concurrent sessions ask for more
        return RoleConfig(engine=EngineConfig(model="smollm2-135m"),
                          deployment=RoleDeployment(num_gpus=gpus, num_cpus=0, max_ongoing_requests=16,
                                                    autoscaling=scaled(1)), warmup=TEST_WARMUP)

    front = RoleDeployment(num_cpus=0, max_ongoing_requests=64, autoscaling=scaled(32))
    return AppConfig(target=engine(1), draft=engine(1), defaults=LookaheadDefaults(max_tokens=32),
                     server=ServerConfig(orchestrator=front, ingress=front))


def replicas() -> dict[str, int]:
    from ray import serve

    deps = serve.status().applications["lookahead"].deployments
    return {ROLES[name]: d.replica_states.get("RUNNING", 0) for name, d in deps.items()}


@pytest.fixture(scope="module")
def app(serve_cluster):
    return serve_cluster.use(autoscaling_config())


class Load:
    """`n` clients sending target-only requests until told to stop; every answer is recorded."""

    def __init__(self, http: str) -> None:
        self.http = http
        self.done: list[float] = []  # completion times
        self.failures: list[str] = []
        self.stop = asyncio.Event()

    async def client(self, i: int) -> None:
        async with httpx.AsyncClient(base_url=self.http, timeout=600) as http:
            while not self.stop.is_set():
                r = await http.post("/v1/chat/completions", json={
                    "model": "lookahead", "max_tokens": 32, "temperature": 0, "lookahead": {"mode": "ar"},
                    "messages": [{"role": "user", "content": f"Count from {i} to {i + 20}, one number per line."}]})
                if r.status_code == 200:
                    self.done.append(time.monotonic())
                else:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")


async def until(condition, timeout: float, seen: list[dict]) -> float:
    """Poll the replica counts (recording each sample) until `condition(counts)`; returns the time."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await asyncio.to_thread(replicas)
        seen.append(counts)
        if condition(counts):
            return time.monotonic()
        assert time.monotonic() < deadline, f"replica counts never got there: {seen[-5:]}"
        await asyncio.sleep(1)


def test_the_delays_reach_serve():
    from ray.serve.schema import ServeDeploySchema

    from deployments.serve_config import serve_config

    sc = serve_config(autoscaling_config())
    ServeDeploySchema.model_validate(sc)
    (target,) = [d for d in sc["applications"][0]["deployments"] if d["name"] == "TargetEngine"]
    assert target["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
                                            "upscale_delay_s": 1, "downscale_delay_s": 5}


async def test_load_on_the_target_scales_the_target_only(app):
    assert replicas() == {"target": 1, "draft": 1, "orchestrator": 1, "ingress": 1}
    heavy, light = Load(app.http), Load(app.http)
    seen: list[dict] = []
    start = time.monotonic()
    heavy_tasks = [asyncio.create_task(heavy.client(i)) for i in range(6)]
    light_task = asyncio.create_task(light.client(100))
    scaled_up = await until(lambda c: c["target"] == 2, 600, seen)

    heavy.stop.set()  # down to the one light client: the target is over-provisioned now
    await asyncio.gather(*heavy_tasks)
    calm = time.monotonic()
    scaled_down = await until(lambda c: c["target"] == 1, 600, seen)
    light.stop.set()
    await light_task

    assert heavy.failures == [] and light.failures == []
    # the other roles never left their minimum
    assert all(c["draft"] == c["orchestrator"] == c["ingress"] == 1 for c in seen), seen
    done = heavy.done + light.done
    assert any(start < t <= scaled_up for t in done), "no session completed during the scale-up"
    assert any(calm < t <= scaled_down for t in light.done), "no session completed during the scale-down"
    print(f"scale-up after {scaled_up - start:.0f} s, {sum(start < t <= scaled_up for t in done)} sessions "
          f"done meanwhile; scale-down {scaled_down - calm:.0f} s after the load dropped, "
          f"{sum(calm < t <= scaled_down for t in light.done)} sessions done meanwhile")
