"""Engines for a benchmark run: each model loaded once, and a meter around each run's calls.

`EnginePool.get(cfg)` builds an engine the first time a config is seen. On the hf engine
the number of prompt-lookup tokens is a plain attribute read at every call, so configs that
differ only in `num_speculative_tokens` share one engine (the pool sets the attribute before
handing it out; runs are sequential). Other engines get one instance per config.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass


class EnginePool:
    def __init__(self) -> None:
        self._engines: dict[str, object] = {}
        self.load_s: dict[str, float] = {}

    @staticmethod
    def key(cfg) -> str:
        exclude = {"num_speculative_tokens"} if cfg.engine == "hf" else set()
        return json.dumps(cfg.model_dump(exclude=exclude), sort_keys=True)

    def get(self, cfg):
        from deployments.engines.factory import build_engine

        key = self.key(cfg)
        if key not in self._engines:
            t0 = time.perf_counter()
            self._engines[key] = build_engine(cfg)
            self.load_s[f"{cfg.model} ({cfg.engine}, {cfg.token_speculation})"] = round(time.perf_counter() - t0, 2)
        engine = self._engines[key]
        if cfg.engine == "hf":
            engine.num_speculative_tokens = cfg.num_speculative_tokens
        return engine

    async def close(self) -> None:
        for engine in self._engines.values():
            shutdown = getattr(engine, "shutdown", None)
            if shutdown is not None:
                await shutdown()


@dataclass
class Meter:
    calls: int = 0
    rows: int = 0
    tokens: int = 0  # tokens generated, every row (drafts that were never used included)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"calls": self.calls, "rows": self.rows, "tokens": self.tokens, "seconds": round(self.seconds, 4),
                "mean_batch": round(self.rows / self.calls, 3) if self.calls else 0.0}


class Metered:
    """A StepEngine that counts what passes through it; everything else is the engine's."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.meter = Meter()

    def __getattr__(self, name):
        return getattr(self._engine, name)

    async def generate_steps(self, requests):
        t0 = time.perf_counter()
        steps = await self._engine.generate_steps(requests)
        m = self.meter
        m.calls += 1
        m.rows += len(requests)
        m.tokens += sum(len(s.token_ids) for s in steps)
        m.seconds += time.perf_counter() - t0
        return steps
