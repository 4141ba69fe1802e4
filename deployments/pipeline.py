"""In-process pipeline: engines + verifier + per-request parameters from one AppConfig.

Used by `lookahead generate`, the benchmarks, and (per role) by the Serve deployments.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deployments.api.request import RequestOptions
from deployments.config import AppConfig, LookaheadDefaults, VerifierConfig
from deployments.engines.factory import build_engine
from orchestrator.lookahead import LookaheadParams
from orchestrator.modes import Mode
from orchestrator.types import SamplingParams


#: per-request sampling options with no server default (OpenAI/vLLM request extras): unset, the
#: SamplingParams defaults (no penalty, no min_p, no bias)
SAMPLING_EXTRAS = ("repetition_penalty", "min_p", "logit_bias", "min_tokens", "ignore_eos", "stop_token_ids",
                   "include_stop_str_in_output", "skip_special_tokens")


def lookahead_params(defaults: LookaheadDefaults, options: RequestOptions | None = None, *,
                     token_speculation: str = "none") -> LookaheadParams:
    """Per-request parameters: the config's defaults, overridden by what the request set.

    `token_speculation` is the target engine's setting: the mode runs with the token layer the
    engine has (ValueError when the mode asks for one it has not; orchestrator/modes.py)."""
    o = options or RequestOptions()
    extras = {k: v for k in SAMPLING_EXTRAS if (v := getattr(o, k)) not in (None, ())}
    d = defaults.model_copy(update={k: v for k in LookaheadDefaults.model_fields if (v := getattr(o, k, None)) is not None})
    sampling = SamplingParams(d.temperature, d.top_p, d.top_k, o.seed, **extras)
    mode = Mode.parse(d.mode).run_on(token_speculation != "none")
    return LookaheadParams(mode=mode.core, tokens=mode.tokens, depth=d.depth, width=d.width, schedule=d.schedule,
                           max_step_tokens=d.max_step_tokens, max_tokens=d.max_tokens,
                           target_sampling=sampling, draft_sampling=sampling,
                           seed=o.seed)  # None: fresh randomness per request


def build_verifier(cfg: VerifierConfig, target=None, judge=None):
    from deployments.model_cache import resolve_model
    from verifier.factory import build_verifier as build
    from verifier.kinds import needs

    # verifier/ sits below the model cache: it gets resolved paths, never short names
    models = {field: resolve_model(getattr(cfg, field)) for field in needs(cfg.kind).models}
    return build(cfg.kind, threshold=cfg.threshold, numeric_guard=cfg.numeric_guard, plan_guard=cfg.plan_guard,
                 judge=judge, target=target, **models)


@dataclass
class Pipeline:
    target: Any
    draft: Any | None
    judge: Any | None
    verifier: Any | None

    @classmethod
    def build(cls, cfg: AppConfig) -> "Pipeline":
        target = build_engine(cfg.target.engine)
        draft = build_engine(cfg.draft.engine) if cfg.draft else None
        judge = build_engine(cfg.judge.engine) if cfg.judge else None
        verifier = build_verifier(cfg.verifier, target=target, judge=judge) if draft else None
        return cls(target, draft, judge, verifier)
