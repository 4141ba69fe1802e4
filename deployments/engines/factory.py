"""Engine construction from config: the one place that knows every engine class."""
from __future__ import annotations

from deployments.config import EngineConfig


def build_engine(cfg: EngineConfig):
    """Return a StepEngine (and ChoiceScorer) for one model."""
    if cfg.engine == "hf":
        from deployments.engines.hf import HFEngine

        return HFEngine(cfg.model, device=cfg.device, dtype=cfg.dtype, batch_invariant=cfg.batch_invariant,
                        cpu_threads=cfg.cpu_threads,
                        token_speculation=cfg.token_speculation,
                        num_speculative_tokens=cfg.num_speculative_tokens,
                        speculative_model=cfg.speculative_model, **cfg.engine_kwargs)
    if cfg.engine == "vllm":
        from deployments.engines.vllm_engine import VLLMEngine

        return VLLMEngine(cfg)
    raise ValueError(f"unknown engine {cfg.engine!r}: use 'hf' or 'vllm'")
