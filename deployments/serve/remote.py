"""A DeploymentHandle seen through the core's StepEngine / ChoiceScorer protocols.

Cancelling the awaiting task cancels the DeploymentResponse, so a rejected branch stops
work on the engine replica too.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from orchestrator.types import Prompt, Step, StepRequest

log = logging.getLogger("ray.serve")


def cancel_quietly(response) -> None:
    """Cancel a handle call; cancelling one that already failed re-raises its error: ignore it."""
    try:
        response.cancel()
    except Exception:  # noqa: BLE001
        pass


def replica_lost(exc: BaseException) -> bool:
    """A replica died or vanished mid-call (worth one more try on another replica)."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    return isinstance(exc, (ActorDiedError, ActorUnavailableError, RayActorError, ReplicaUnavailableError,
                            DeploymentUnavailableError))


class RemoteEngine:
    def __init__(self, handle, tokenizer_key: str, *, timeout_s: float | None = None, retries: int = 0,
                 role: str = "engine", observe: Callable[[str, str, float, str], None] | None = None) -> None:
        self.handle = handle
        self.tokenizer_key = tokenizer_key
        self.timeout_s = timeout_s
        self.retries = retries
        self.role = role
        self.observe = observe  # (role, method, seconds, outcome) per call: the engine-call latency metric
        self.retried = 0  # calls sent again after their replica was lost (the orchestrator's /stats)

    async def _call(self, method: str, *args):
        for attempt in range(self.retries + 1):
            response = getattr(self.handle, method).remote(*args)
            start, outcome = time.monotonic(), "error"
            try:
                result = await asyncio.wait_for(response_result(response), self.timeout_s)
                outcome = "ok"
                return result
            except asyncio.CancelledError:
                outcome = "cancelled"  # a rejected branch, or the request went away
                cancel_quietly(response)
                raise
            except asyncio.TimeoutError:
                outcome = "timeout"
                cancel_quietly(response)
                raise TimeoutError(f"{method} took longer than {self.timeout_s}s") from None
            except Exception as exc:  # noqa: BLE001
                if attempt == self.retries or not replica_lost(exc):
                    raise
                self.retried += 1
                log.warning("%s replica lost during %s (%s); sending the call again (retry %d of %d)", self.role,
                            method, type(exc).__name__, attempt + 1, self.retries)
            finally:
                if self.observe is not None:
                    self.observe(self.role, method, time.monotonic() - start, outcome)

    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        return await self._call("generate_steps", requests)

    async def prompt_tokens(self, prompt: Prompt) -> int:
        return await self._call("prompt_tokens", prompt)

    async def choice_probs(self, prompts: list[Prompt], choices: list[str]) -> list[list[float]]:
        return await self._call("choice_probs", prompts, choices)


async def response_result(response):
    """A DeploymentResponse as a coroutine, so asyncio.wait_for can bound it."""
    return await response
