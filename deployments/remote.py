"""A DeploymentHandle seen through the core's StepEngine / ChoiceScorer protocols.

Cancelling the awaiting task cancels the DeploymentResponse, so a rejected branch stops
work on the engine replica too.
"""
from __future__ import annotations

import asyncio

from orchestrator.types import Prompt, Step, StepRequest


class RemoteEngine:
    def __init__(self, handle, tokenizer_key: str) -> None:
        self.handle = handle
        self.tokenizer_key = tokenizer_key

    async def _call(self, method: str, *args):
        response = getattr(self.handle, method).remote(*args)
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()
            raise

    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        return await self._call("generate_steps", requests)

    async def choice_probs(self, prompts: list[Prompt], choices: list[str]) -> list[list[float]]:
        return await self._call("choice_probs", prompts, choices)
