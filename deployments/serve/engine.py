"""The draft, target and judge roles: one Serve deployment class, a thin shell around an engine.

Each role is bound under its own name (TargetEngine, DraftEngine, JudgeEngine) with its own
ray_actor_options and autoscaling, so the roles scale independently. It calls only what the
engine contract (`deployments/engines/protocol.py`) declares, so every engine works here.
"""
from __future__ import annotations

import os

from ray import serve

from deployments.config import EngineConfig
from orchestrator.types import Prompt, Step, StepRequest


@serve.deployment(max_ongoing_requests=16)
class EngineDeployment:
    def __init__(self, engine: dict) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from deployments.engines.factory import build_engine

        self.config = EngineConfig(**engine)
        self.engine = build_engine(self.config)

    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        # Serve cancels this task when the caller cancels; engines abort the rows on CancelledError.
        return await self.engine.generate_steps(requests)

    async def choice_probs(self, prompts: list[Prompt], choices: list[str]) -> list[list[float]]:
        return await self.engine.choice_probs(prompts, choices)

    async def info(self) -> dict:
        return self.engine.info()

    async def prompt_tokens(self, prompt: Prompt) -> int:
        return self.engine.prompt_tokens(prompt)

    async def check_health(self) -> None:
        # Serve calls this periodically; raising marks the replica unhealthy and Serve replaces it.
        await self.engine.check_health()

    def __del__(self) -> None:
        # Serve calls this when it stops the replica (sync, so garbage collection can call it too).
        engine = self.__dict__.get("engine")  # absent when the constructor failed
        if engine is not None:
            engine.close()
