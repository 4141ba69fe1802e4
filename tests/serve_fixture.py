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
