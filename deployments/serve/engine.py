"""The draft, target and judge roles: one Serve deployment class, a thin shell around an engine.

Each role is bound under its own name (TargetEngine, DraftEngine, JudgeEngine) with its own
ray_actor_options and autoscaling, so the roles scale independently.
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
        return {"model": self.config.model, "tokenizer_key": self.engine.tokenizer_key,
                "max_context": self.engine.max_context, "token_speculation": self.config.token_speculation}

    async def prompt_tokens(self, prompt: Prompt) -> int:
        return self.engine.prompt_tokens(prompt)
