"""In-process engines shared by every module of a test session: one per engine config.

Loading a model costs seconds (transformers) to more than a minute (a vLLM engine on CPU), so a
model is loaded once per session however many modules use it. Engines are built the way Serve
builds them, through EngineDeployment's own constructor from the config dict a Serve config
carries, so a test of the deployment class and a test of the engine share one instance. An
engine a test shut down is rebuilt on the next request. Everything is closed at session end
(tests/conftest.py), which the leftover-process check then verifies.
"""
from __future__ import annotations

import contextlib
from unittest import mock

from deployments.config import EngineConfig


#: a vLLM engine's KV cache in the tests: enough for a few 2048-token sequences of the small models,
#: a quarter of the default, so two in-process engines and the Serve ones fit in memory together
TEST_KV_CACHE_BYTES = 512 * 1024**2


def hf_config(model: str, **kw) -> EngineConfig:
    """The transformers engine as the tests run it: CPU, rows one by one (bit-identical greedy
    results however a batch is made up, which lossless comparisons need)."""
    return EngineConfig(model=model, engine="hf", device="cpu", **{"batch_invariant": True, **kw})


def vllm_config(model: str, **kw) -> EngineConfig:
    engine_kwargs = {"max_model_len": 2048, "kv_cache_memory_bytes": TEST_KV_CACHE_BYTES, **kw.pop("engine_kwargs", {})}
    return EngineConfig(model=model, engine="vllm", engine_kwargs=engine_kwargs, **kw)


def _deployment_class():
    from deployments.serve.engine import EngineDeployment

    return EngineDeployment.func_or_class  # the user class Serve instantiates in each replica


@contextlib.contextmanager
def replica_context(deployment: str):
    """What `serve.get_replica_context()` tells a replica while it starts: its deployment's name
    (the role label of its metrics)."""
    from types import SimpleNamespace

    context = SimpleNamespace(deployment=deployment, app_name="lookahead", replica_tag=f"{deployment}#local",
                              replica_id=SimpleNamespace(unique_id="local", deployment_id=None))
    with mock.patch("ray.serve.get_replica_context", return_value=context):
        yield


def _alive(deployment) -> bool:
    engine = deployment.engine
    if getattr(engine, "_closed", False):  # transformers engine
        return False
    thread = getattr(engine, "_thread", None)  # vLLM engine: its loop thread ends on close
    return thread is None or thread.is_alive()


class SharedEngines:
    def __init__(self) -> None:
        self._deployments: dict[str, object] = {}

    def deployment(self, cfg: EngineConfig, role: str = "TargetEngine"):
        """The EngineDeployment (the replica's object, outside Serve) for this engine config."""
        key = cfg.model_dump_json()
        dep = self._deployments.get(key)
        if dep is None or not _alive(dep):
            with replica_context(role):
                dep = _deployment_class()(cfg.model_dump(mode="json"))
            self._deployments[key] = dep
        return dep

    def engine(self, cfg: EngineConfig):
        return self.deployment(cfg).engine

    def hf(self, model: str, **kw):
        return self.engine(hf_config(model, **kw))

    def vllm(self, model: str, **kw):
        return self.engine(vllm_config(model, **kw))

    def vllm_engine_cores(self) -> int:
        """Engine core processes the live in-process vLLM engines own (one each)."""
        return sum(1 for dep in self._deployments.values() if dep.config.engine == "vllm" and _alive(dep))

    def close(self) -> None:
        for dep in self._deployments.values():
            dep.__del__()  # what Serve calls when it stops a replica: closes the engine
        self._deployments.clear()


ENGINES = SharedEngines()
