"""Start the real application on local Ray (CPU, fake GPUs) for end-to-end tests."""
from __future__ import annotations

import os
import tempfile
import time

from deployments.config import AppConfig, EngineConfig, LookaheadDefaults, RoleConfig, RoleDeployment, ServerConfig

HTTP = "http://127.0.0.1:8000"
GRPC = "127.0.0.1:9000"


def role(model: str, gpus: float, **engine) -> RoleConfig:
    # num_gpus=1 per role, as on a GPU cluster; ray.init fakes the GPUs on this CPU box
    return RoleConfig(engine=EngineConfig(model=model, batch_invariant=True, **engine),
                      deployment=RoleDeployment(num_gpus=gpus, num_cpus=0, max_ongoing_requests=32))


def test_config(**defaults) -> AppConfig:
    light = RoleDeployment(num_cpus=0, max_ongoing_requests=64)
    return AppConfig(target=role("qwen2.5-0.5b", 1), draft=role("smollm2-135m", 1),
                     defaults=LookaheadDefaults(**{"depth": 2, "max_tokens": 24, **defaults}),
                     server=ServerConfig(orchestrator=light, ingress=light))


def start(cfg: AppConfig, name: str = "lookahead"):
    import ray
    from ray import serve

    from deployments.app import build_app
    from deployments.serve_config import serve_config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not ray.is_initialized():
        ray.init(num_cpus=4, num_gpus=3, object_store_memory=200 * 1024**2, include_dashboard=False,
                 _temp_dir=tempfile.mkdtemp(prefix="ray-", dir="/tmp"), log_to_driver=False)
    sc = serve_config(cfg)
    serve.start(http_options={"host": "127.0.0.1", "port": 8000}, grpc_options=sc["grpc_options"])
    t0 = time.time()
    handle = serve.run(build_app(cfg), name=name, route_prefix="/")
    return handle, time.time() - t0


def stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


API_KEY = "test-key-7f3a"


def small_config(key_file: str) -> AppConfig:
    """SmolLM2-135M in every role (fast on CPU), a judge, API keys, tight queues, short limits.

    The judge's threshold is above 1 so it never accepts: the judge is really called on every
    draft, yet the output is exactly the target's, which makes failures comparable to ar.
    """
    from deployments.config import VerifierConfig

    light = RoleDeployment(num_cpus=0, max_ongoing_requests=64)
    tight = RoleDeployment(num_cpus=0, max_ongoing_requests=2, max_queued_requests=2)
    return AppConfig(
        target=role("smollm2-135m", 1), draft=role("smollm2-135m", 1, dtype="bfloat16"),
        judge=role("smollm2-135m", 0.5),
        verifier=VerifierConfig(kind="llm-judge", threshold=1.01),
        defaults=LookaheadDefaults(depth=2, max_tokens=24),
        server=ServerConfig(orchestrator=tight, ingress=light, api_keys_file=key_file, max_tokens_limit=64,
                            draft_timeout_s=30, judge_timeout_s=30),
    )
