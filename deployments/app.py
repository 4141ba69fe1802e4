"""config -> `build_app(config)` -> draft/target/judge/orchestrator/ingress deployments; `start_local`
runs that application on local Ray (`lookahead serve`, `lookahead demo`, benchmarks, tests).

Serve entry points: `build_app_from_args` (the import path of every generated Serve config and
manifest, and of `serve run deployments.app:build_app_from_args config=FILE`), and one
application per shipped profile, `deployments.app:cpu_demo`, `:cpu_vllm`, `:gpu_dev`,
`:gpu_prod`, for `serve build` (which takes only an application) and `serve run`.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

from ray.serve import Application

from deployments.config import AppConfig
from deployments.serve.engine import EngineDeployment
from deployments.serve.ingress import Ingress
from deployments.serve import warmup
from deployments.serve.orchestrator import Orchestrator
from deployments.serve_config import ENGINE_ROLES, ROLE_DEPLOYMENTS, deployment_entry, load_app_config, role_deployments


def build_app(config: AppConfig | dict) -> Application:
    cfg = config if isinstance(config, AppConfig) else AppConfig(**config)
    raw = cfg.model_dump(mode="json")
    placement = role_deployments(cfg)

    def bind(role: str, deployment, *args: Any):
        # the same options the generated Serve YAML lists (serve_config.deployment_entry)
        return deployment.options(**deployment_entry(ROLE_DEPLOYMENTS[role], placement[role])).bind(*args)

    engines = {role: bind(role, EngineDeployment, getattr(cfg, role).engine.model_dump(mode="json"),
                          warmup.plan(cfg, role))
               for role in ENGINE_ROLES if role in placement}
    orch = bind("orchestrator", Orchestrator, raw, engines["target"], engines.get("draft"), engines.get("judge"))
    return bind("ingress", Ingress, raw, orch)


def build_app_from_args(args: dict) -> Application:
    """Serve application builder for `serve run` / `serve deploy`: `args.config` is an AppConfig
    mapping (as the generated Serve configs carry it) or the path of a YAML file holding one
    (a plain AppConfig, a Serve config or a RayService manifest): on the command line,
    `serve run deployments.app:build_app_from_args config=FILE`, where every arg is a string."""
    config = args["config"]
    return build_app(load_app_config(config) if isinstance(config, str) else config)


def __getattr__(name: str) -> Application:
    """`deployments.app:<profile>` (the profile's name with `_` for `-`): its application."""
    from deployments.profiles import PROFILES

    profile = name.replace("_", "-")
    if profile not in PROFILES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r} (profiles: {', '.join(PROFILES)})")
    return build_app(PROFILES[profile])


def ray_init_args(*, address: str | None = None, fake_gpus: int = 0, quiet: bool = False,
                  env_vars: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``ray.init`` arguments of `start_local`. Without ``address`` a private Ray on this
    machine (fake GPUs let num_gpus=1 roles schedule on a CPU box, exactly as they would on a GPU
    node); with one, connect to that cluster and leave its resources as they are. ``env_vars``
    reach every replica through the job's runtime env (Serve deployments inherit it), also on a
    cluster whose nodes this process did not start."""
    kwargs: dict[str, Any] = {"log_to_driver": not quiet}
    if address:
        if fake_gpus:
            raise ValueError("fake GPUs are for a private Ray: an existing cluster has the GPUs it has")
        kwargs["address"] = address
    else:
        kwargs.update(num_cpus=max(4, os.cpu_count() or 1), num_gpus=fake_gpus or None,
                      object_store_memory=256 * 1024**2, include_dashboard=False,
                      _temp_dir=tempfile.mkdtemp(prefix="lookahead-ray-"))
    if env_vars:
        kwargs["runtime_env"] = {"env_vars": dict(env_vars)}
    return kwargs


def start_local(cfg, *, fake_gpus: int = 0, quiet: bool = False, also: dict | None = None,
                address: str | None = None, host: str = "0.0.0.0", env_vars: dict[str, str] | None = None):
    """ray.init (if needed; ``address``: an existing cluster's, else a private one) + Serve on
    ``host`` and the config's HTTP and gRPC ports + the application.
    `also`: {name: AppConfig} of further applications deployed at once beside it, each under
    the route prefix /<name> (the demo's plain target); returns the first one's handle."""
    import ray
    from ray import serve

    from deployments.serve_config import serve_config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not ray.is_initialized():
        ray.init(**ray_init_args(address=address, fake_gpus=fake_gpus, quiet=quiet, env_vars=env_vars))
    sc = serve_config(cfg)
    serve.start(http_options={**sc["http_options"], "host": host}, grpc_options=sc["grpc_options"])
    if not also:
        return serve.run(build_app(cfg), name="lookahead", route_prefix="/")
    targets = [serve.RunTarget(build_app(cfg), name="lookahead", route_prefix="/")]
    targets += [serve.RunTarget(build_app(c), name=name, route_prefix=f"/{name}") for name, c in also.items()]
    return serve.run_many(targets)[0]
