"""The draft, target and judge roles: one Serve deployment class, a thin shell around an engine.

Each role is bound under its own name (TargetEngine, DraftEngine, JudgeEngine) with its own
ray_actor_options and autoscaling, so the roles scale independently. It calls only what the
engine contract (`deployments/engines/protocol.py`) declares, so every engine works here.
"""
from __future__ import annotations

import os
import time

import ray
from ray import serve

from deployments.config import EngineConfig
from deployments.engines.vllm_engine import VLLM_RAY_METRICS_ENV
from deployments.serve.metrics import PREFIX, LookaheadMetrics
from deployments.serve.warmup import run as run_warmup
from deployments.serve_config import DEPLOYMENT_ROLES
from orchestrator.types import Prompt, Step, StepRequest


@serve.deployment(max_ongoing_requests=16)
class EngineDeployment:
    def __init__(self, engine: dict, warmup: dict | None = None) -> None:
        """`warmup`: the role's warm-up plan (deployments/serve/warmup.py), run here, before Serve
        routes any request to this replica; None: none (an engine built outside an application)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from deployments.engines.factory import build_engine

        # In a real replica, vLLM's own metrics (vllm:*) go through Ray's, as in Ray Serve LLM
        # (engine_kwargs {"disable_log_stats": true} turns them off).
        if ray.is_initialized():
            os.environ.setdefault(VLLM_RAY_METRICS_ENV, "1")
        self.config = EngineConfig(**engine)
        self.engine = build_engine(self.config)
        self.role = DEPLOYMENT_ROLES.get(_deployment_name(), "engine")  # the metrics' role label
        self.metrics = LookaheadMetrics([PREFIX + "spec_decode_num_draft_tokens_total",
                                         PREFIX + "spec_decode_num_accepted_tokens_total"])
        self._spec_seen = {"draft_tokens": 0, "accepted_tokens": 0}
        self.warmup = run_warmup(self.engine, warmup)
        # the exported token-acceptance counters count served requests, not the warm-up's
        self._spec_seen = {k: int(self.engine.token_acceptance().get(k, 0)) for k in self._spec_seen}
        self.first_call_at: float | None = None  # wall time of the first call after start-up

    def _called(self) -> None:
        if self.first_call_at is None:
            self.first_call_at = time.time()

    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        # Serve cancels this task when the caller cancels; engines abort the rows on CancelledError.
        self._called()
        try:
            return await self.engine.generate_steps(requests)
        finally:
            self._export_token_acceptance()

    def _export_token_acceptance(self) -> None:
        totals = self.engine.token_acceptance()
        for key in self._spec_seen:
            delta = int(totals.get(key, 0)) - self._spec_seen[key]
            if delta > 0:
                self.metrics.inc(f"spec_decode_num_{key}_total", delta, role=self.role)
                self._spec_seen[key] += delta

    async def choice_probs(self, prompts: list[Prompt], choices: list[str]) -> list[list[float]]:
        self._called()
        return await self.engine.choice_probs(prompts, choices)

    async def info(self) -> dict:
        return self.engine.info()

    async def warmup_report(self) -> dict:
        """What ran at start-up (calls, step rows, verdict pairs, seconds, when it finished) and when the
        first call after it came: the warm-up finished before this replica served anything."""
        return {**self.warmup, "first_call_at": self.first_call_at}

    async def token_acceptance(self) -> dict:
        """Token-level speculation totals of this replica (`lookahead demo` reports a run's share)."""
        return self.engine.token_acceptance()

    async def prompt_tokens(self, prompt: Prompt) -> int:
        return self.engine.prompt_tokens(prompt)

    async def num_unfinished_requests(self) -> int:
        return await self.engine.num_unfinished_requests()

    async def check_health(self) -> None:
        # Serve calls this periodically; raising marks the replica unhealthy and Serve replaces it.
        await self.engine.check_health()

    def __del__(self) -> None:
        # Serve calls this when it stops the replica (sync, so garbage collection can call it too).
        engine = self.__dict__.get("engine")  # absent when the constructor failed
        if engine is not None:
            engine.close()


def _deployment_name() -> str:
    """This replica's deployment (TargetEngine, ...); "" when the class runs outside Serve (tests)."""
    from ray.serve.exceptions import RayServeException

    try:
        return serve.get_replica_context().deployment
    except RayServeException:
        return ""
