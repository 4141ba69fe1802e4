"""The two small interfaces the Lookahead Reasoning core runs against.

Anything with these methods works: an in-process transformers/vLLM engine, a Ray Serve
DeploymentHandle wrapper, or a scripted fake in unit tests. Cancelling the awaiting task
must cancel the work (engines abort their request; handles cancel the DeploymentResponse).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from orchestrator.types import Prompt, Step, StepRequest, Verdict, VerifyPair


@runtime_checkable
class StepEngine(Protocol):
    #: identifies the tokenizer; engines with equal keys exchange token ids, not text
    tokenizer_key: str

    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        """Generate one step for each request, as one batch where the engine can."""
        ...


@runtime_checkable
class Verifier(Protocol):
    name: str

    async def verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        """Rule on each (draft, target) pair: is the draft an acceptable stand-in?"""
        ...


@runtime_checkable
class ChoiceScorer(Protocol):
    """An engine that can read a model's preference among short answers (judges, raters)."""

    async def choice_probs(self, prompts: list[Prompt], choices: list[str]) -> list[list[float]]:
        """For each prompt (rendered with the chat template and a generation prompt), the
        probability of each choice's first token: the model's own, over its whole vocabulary
        (never renormalised over the choices, so a low total says the model answered otherwise)."""
        ...
