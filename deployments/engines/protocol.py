"""The engine contract: everything the core, the Serve layer and the CLI ask of a model engine.

Every engine (transformers `hf`, `vllm`) subclasses `Engine` and is built the same way,
`EngineClass(cfg: EngineConfig)`, by `deployments.engines.factory.build_engine`. The Serve
deployment (`deployments/serve/engine.py`) calls only what is declared here, so a config that
swaps one engine for another cannot hit a missing method at request time.

The core (`orchestrator/`) sees an engine through its two smaller protocols, StepEngine
(`tokenizer_key`, `generate_steps`) and ChoiceScorer (`choice_probs`); `Engine` satisfies both.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from dataclasses import replace

from deployments.config import EngineConfig
from deployments.engines.rows import SUPPRESS_BIAS
from orchestrator.types import Prompt, SamplingParams, Step, StepRequest


class EngineUnhealthy(RuntimeError):
    """The engine cannot serve (its worker died, its device failed): the replica should be replaced."""


class Engine(ABC):
    #: identifies the tokenizer; engines with equal keys exchange token ids, not text
    tokenizer_key: str

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        self.name = cfg.model
        # engine_kwargs "suppress_tokens": token ids this engine never writes (transformers'
        # generation_config.suppress_tokens), as a -100 logit bias on every request. A draft that
        # may not write ".\n\n" as one token writes the same text in other tokens than its target.
        self.suppress_tokens = tuple(int(t) for t in cfg.engine_kwargs.get("suppress_tokens", ()))

    def sampling_for(self, sampling: SamplingParams) -> SamplingParams:
        """A request's sampling with this engine's suppressed tokens added to its logit bias."""
        if not self.suppress_tokens:
            return sampling
        bias = dict(sampling.logit_bias) | {t: SUPPRESS_BIAS for t in self.suppress_tokens}
        return replace(sampling, logit_bias=tuple(sorted(bias.items())))

    # -- the core's protocols (StepEngine, ChoiceScorer) -----------------------------------
    @abstractmethod
    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        """One step per request, batched where the engine can. Cancelling the awaiting task
        must stop the work (the rows are aborted) before the CancelledError propagates."""

    @abstractmethod
    async def choice_probs(self, prompts: list[Prompt], choices: list[str]) -> list[list[float]]:
        """For each prompt (chat template + generation prompt), the probability of each choice's
        first token over the whole vocabulary, not renormalised over the choices (judges and
        raters reject a pair when the total is low: the model answered something else)."""

    # -- what the Serve layer and the CLI need ------------------------------------------
    @property
    @abstractmethod
    def max_context(self) -> int:
        """Longest context (prompt + generated tokens) the engine accepts."""

    @abstractmethod
    def prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens the rendered prompt takes in this engine's tokenizer (usage accounting, limits)."""

    def info(self) -> dict:
        """What the orchestrator needs to know about this engine at start-up (plain JSON)."""
        return {"engine": self.cfg.engine, "model": self.cfg.model, "tokenizer_key": self.tokenizer_key,
                "max_context": self.max_context, "token_speculation": self.cfg.token_speculation,
                "vocab_size": len(self.tokenizer),  # token ids a request may name (logit_bias)
                "refused_sampling": list(self.refused_sampling())}

    def refused_sampling(self) -> tuple[str, ...]:
        """Sampling parameters this engine cannot apply when sampling (the orchestrator answers a
        request setting one with a 400 naming it); none by default."""
        return ()

    def token_acceptance(self) -> dict:
        """Token-level speculation inside steps so far (running totals): ``draft_tokens`` proposed
        and ``accepted_tokens`` kept. Zeros for an engine that speculates on no tokens; the Serve
        layer exports the increments as metrics."""
        return {"draft_tokens": 0, "accepted_tokens": 0}

    @abstractmethod
    async def num_unfinished_requests(self) -> int:
        """Step generations the engine still holds (queued or running, not cancelled): zero once
        every caller has finished or gone away."""

    @abstractmethod
    async def check_health(self) -> None:
        """Return when the engine can serve; raise EngineUnhealthy (or the engine's own error) when not.
        Cheap: Serve calls it every few seconds per replica."""

    def close(self) -> None:
        """Release the model and any background workers, synchronously. Idempotent."""

    async def shutdown(self) -> None:
        """`close` without blocking the caller's event loop."""
        import asyncio

        await asyncio.to_thread(self.close)
