"""config -> `build_app(config)` -> draft/target/judge/orchestrator/ingress deployments; `start_local`
runs that application on local Ray (`lookahead serve`, `lookahead demo`, benchmarks, tests)."""
from __future__ import annotations

import os
import tempfile
from typing import Any

from ray.serve import Application

from deployments.config import AppConfig, RoleDeployment
from deployments.serve.engine import EngineDeployment
from deployments.serve.ingress import Ingress
from deployments.serve.orchestrator import Orchestrator


def _options(name: str, role: RoleDeployment) -> dict[str, Any]:
    # Always an autoscaling_config (min == max for a fixed size), as the Serve YAML has it:
    # mixing num_replicas here with autoscaling_config there would conflict.
    a = role.autoscaling
    return {
        "name": name,
        "ray_actor_options": {"num_gpus": role.num_gpus, "num_cpus": role.num_cpus},
        "max_ongoing_requests": role.max_ongoing_requests,
        "max_queued_requests": role.max_queued_requests,
        "autoscaling_config": a.serve_options(),
        "health_check_period_s": role.health_check_period_s,
        "health_check_timeout_s": role.health_check_timeout_s,
    }


def build_app(config: AppConfig | dict) -> Application:
    cfg = config if isinstance(config, AppConfig) else AppConfig(**config)
    raw = cfg.model_dump(mode="json")

    def engine(name: str, role):
        return EngineDeployment.options(**_options(name, role.deployment)).bind(role.engine.model_dump(mode="json"))

    target = engine("TargetEngine", cfg.target)
    draft = engine("DraftEngine", cfg.draft) if cfg.draft else None
    judge = engine("JudgeEngine", cfg.judge) if cfg.judge else None
    orch = Orchestrator.options(**_options("Orchestrator", cfg.server.orchestrator)).bind(raw, target, draft, judge)
    return Ingress.options(**_options("Ingress", cfg.server.ingress)).bind(raw, orch)


def build_app_from_args(args: dict) -> Application:
    """Serve application builder for `serve run` / `serve deploy` (import_path ... args: {config: ...})."""
    return build_app(args["config"])


def start_local(cfg, *, fake_gpus: int = 0, quiet: bool = False, also: dict | None = None):
    """ray.init (if needed) + Serve on the config's HTTP and gRPC ports + the application.
    `also`: {name: AppConfig} of further applications deployed at once beside it, each under
    the route prefix /<name> (the demo's plain target); returns the first one's handle."""
    import ray
    from ray import serve

    from deployments.serve_config import serve_config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not ray.is_initialized():
        # Fake GPUs let num_gpus=1 roles schedule on a CPU box, exactly as they would on a GPU node.
        ray.init(num_cpus=max(4, os.cpu_count() or 1), num_gpus=fake_gpus or None,
                 object_store_memory=256 * 1024**2, include_dashboard=False, log_to_driver=not quiet,
                 _temp_dir=tempfile.mkdtemp(prefix="lookahead-ray-"))
    sc = serve_config(cfg)
    serve.start(http_options={"host": "0.0.0.0", "port": cfg.server.http_port}, grpc_options=sc["grpc_options"])
    if not also:
        return serve.run(build_app(cfg), name="lookahead", route_prefix="/")
    targets = [serve.RunTarget(build_app(cfg), name="lookahead", route_prefix="/")]
    targets += [serve.RunTarget(build_app(c), name=name, route_prefix=f"/{name}") for name, c in also.items()]
    return serve.run_many(targets)[0]
