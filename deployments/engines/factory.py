"""Engine construction from config: the one place that knows every engine class."""
from __future__ import annotations

from deployments.config import ENGINES, EngineConfig
from deployments.engines.protocol import Engine


def build_engine(cfg: EngineConfig) -> Engine:
    """The engine `cfg.engine` names, built from its EngineConfig (every engine takes only that)."""
    if cfg.engine == "hf":
        from deployments.engines.hf import HFEngine

        return HFEngine(cfg)
    if cfg.engine == "vllm":
        from deployments.engines.vllm_engine import VLLMEngine

        return VLLMEngine(cfg)
    raise ValueError(f"unknown engine {cfg.engine!r}: use one of {', '.join(ENGINES)}")
