"""One Ray cluster and one Serve instance for the whole test session, running one application at a
time.

Ray and Serve start once (about 15 s and 1 GB on this machine) on free ports, with a Prometheus
metrics port, and fake GPUs so `num_gpus: 1` roles schedule on a CPU box exactly as on a GPU
node. A module asks for the application of its config (`ServeCluster.use`): consecutive modules
whose configs agree share one application and its start-up; a different config replaces it, and
the replaced application's replicas and engine cores must have exited before the next one starts.
tests/conftest.py checks again after every module and at the end of the session.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from deployments.config import (AppConfig, EngineConfig, LookaheadDefaults, RoleConfig, RoleDeployment, ServerConfig,
                                WarmupConfig)
from tests.support import processes
from tests.support.engines import ENGINES

APP = "lookahead"  # the application name every test app uses (one at a time)
FAKE_GPUS = 8
API_KEY = "test-key-7f3a"


#: every test application's engine replicas warm up (deployments/serve/warmup.py), on the smallest
#: plan that still batches: rows 1 and 2, steps of 4 tokens (the default plan costs each app start
#: about 10 s more on 2 cores; the shipped profiles, and test_serve_vllm's, keep it)
TEST_WARMUP = WarmupConfig(batch_sizes=[1, 2], max_step_tokens=4)


def role(model: str, gpus: float = 1, **engine) -> RoleConfig:
    # num_gpus=1 per role, as on a GPU cluster; ray.init fakes the GPUs on this CPU box
    return RoleConfig(engine=EngineConfig(model=model, batch_invariant=True, **engine),
                      deployment=RoleDeployment(num_gpus=gpus, num_cpus=0, max_ongoing_requests=32),
                      warmup=TEST_WARMUP)


def light() -> RoleDeployment:
    """Orchestrator and ingress: no CPU reserved (a 2-core machine runs everything)."""
    return RoleDeployment(num_cpus=0, max_ongoing_requests=64)


def smol_config(**defaults) -> AppConfig:
    """SmolLM2-135M in the draft and target roles (the transformers engine): drafts equal the target's
    steps under greedy decoding, so speculation is accepted, and the application starts in seconds."""
    return AppConfig(target=role("smollm2-135m"), draft=role("smollm2-135m"),
                     defaults=LookaheadDefaults(**{"mode": "lr", "depth": 3, "max_tokens": 48, **defaults}),
                     server=ServerConfig(orchestrator=light(), ingress=light()))


@dataclass
class DeployedApp:
    """An application running on the session's Serve instance."""

    handle: object
    http: str  # base URL, e.g. http://127.0.0.1:41234
    grpc: str  # host:port
    config: AppConfig
    startup_s: float = 0.0

    def deployment(self, name: str):
        """A handle on one of its deployments (Orchestrator, TargetEngine, ...)."""
        from ray import serve

        return serve.get_deployment_handle(name, app_name=APP)

    def wait_healthy(self, name: str, timeout: float = 180) -> None:
        """Until Serve reports deployment `name` healthy again (a killed replica replaced)."""
        from ray import serve

        deadline = time.time() + timeout
        while time.time() < deadline:
            status = serve.status().applications[APP].deployments[name].status
            if str(status).endswith("HEALTHY"):
                return
            time.sleep(1)
        raise AssertionError(f"{name} did not come back in {timeout:g}s")


class ServeCluster:
    """Ray + Serve for the session, started on first use."""

    def __init__(self) -> None:
        self.http_port = processes.free_port()
        self.grpc_port = processes.free_port()
        self.metrics_port = processes.free_port()
        self.temp_dir: Path | None = None
        self.started = False
        self.current: DeployedApp | None = None

    def ports(self) -> list[int]:
        return [self.http_port, self.grpc_port, self.metrics_port]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def serve_logs(self) -> Path:
        return self.temp_dir / "session_latest" / "logs" / "serve"

    def start(self) -> None:
        if self.started:
            return
        import ray
        from ray import serve

        from deployments.serve_config import GRPC_SERVICER_FUNCTIONS, proxy_options

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        try:
            ray.init(num_cpus=4, num_gpus=FAKE_GPUS, object_store_memory=200 * 1024**2, include_dashboard=False,
                     _temp_dir=str(self.temp_dir), log_to_driver=False, _metrics_export_port=self.metrics_port)
            processes.stop_everything_on_sigterm()  # ray.init installed its own SIGTERM handler
            # the proxies' options as every deployment sets them (a proxy timeout above any deadline)
            http, grpc = proxy_options(ServerConfig(http_port=self.http_port, grpc_port=self.grpc_port), host="127.0.0.1")
            serve.start(http_options=http,
                        grpc_options={**grpc, "grpc_servicer_functions": list(GRPC_SERVICER_FUNCTIONS)})
        except BaseException:
            self.shutdown()
            raise
        self.started = True

    def use(self, cfg: AppConfig) -> DeployedApp:
        """The application for `cfg`: the one running when its config is the same (modules whose
        configs agree share one start-up), else the running one is deleted and this one deployed."""
        if self.current is not None and self.current.config == cfg:
            return self.current
        self.delete()
        return self.deploy(cfg)

    def deploy(self, cfg: AppConfig) -> DeployedApp:
        """Run the application; if it fails to start, delete what did start and re-raise."""
        from ray import serve

        from deployments.app import build_app

        self.start()
        if self.current is not None:
            self.delete()
        t0 = time.time()
        try:
            handle = serve.run(build_app(cfg), name=APP, route_prefix="/")
        except BaseException:
            self.delete()
            raise
        self.current = DeployedApp(handle, self.http, self.grpc, cfg, time.time() - t0)
        return self.current

    def delete(self, timeout: float = 120) -> None:
        """Delete the application (if any) and wait until its replicas and their engine cores have exited."""
        from ray import serve

        self.current = None
        if not self.started:
            return
        with contextlib.suppress(Exception):
            serve.delete(APP, _blocking=True)
        left = processes.wait_gone(lambda procs: [p for p in procs if processes.replica_of(p) == APP]
                                   + processes.orphans(procs, ENGINES.vllm_engine_cores()), timeout=timeout)
        if left:
            raise AssertionError(f"application {APP!r} deleted but still running:\n" + "\n".join(map(str, left)))

    def shutdown(self) -> None:
        import ray
        from ray import serve

        if ray.is_initialized():
            with contextlib.suppress(Exception):
                serve.shutdown()
            ray.shutdown()
        self.started = False
        self.current = None


def stray(procs: list[processes.Proc]) -> list[processes.Proc]:
    """Replicas of an application no longer running, and orphaned Ray or vLLM processes."""
    live = {APP} if CLUSTER.current is not None else set()
    return ([p for p in procs if (app := processes.replica_of(p)) is not None and app not in live]
            + processes.orphans(procs, ENGINES.vllm_engine_cores()))


CLUSTER = ServeCluster()
