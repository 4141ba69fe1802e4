"""One step generation in flight, as every decode loop reads and fills it, and the two rules
every engine applies the same way: how long a step may run, and what a length cut is called."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

from orchestrator.types import SamplingParams, StopReason

#: the logit bias that suppresses a token (the bound vLLM allows; far beyond any gap between a
#: model's top logits)
SUPPRESS_BIAS = -100.0


def step_limit(max_step_tokens: int, remaining: int) -> tuple[int, bool]:
    """(new tokens this step may take, whether the total budget set that limit): the step ends
    at `max_step_tokens` or where the answer's remaining budget runs out, whichever comes first."""
    return max(0, min(max_step_tokens, remaining)), remaining <= max_step_tokens


def cut_reason(budget_cut: bool) -> StopReason:
    """A step cut at its token limit: "budget" when the total budget set the limit (the answer
    is over), else "step_limit" (a step too long, not a step end)."""
    return "budget" if budget_cut else "step_limit"


def answer_stops(sampling: SamplingParams, eos_ids) -> frozenset[int]:
    """The tokens that end the answer: the engine's EOS ids (unless ignore_eos) and the request's
    stop_token_ids."""
    return frozenset(() if sampling.ignore_eos else eos_ids) | frozenset(sampling.stop_token_ids)


def hold_stops(sampling: SamplingParams, stops: frozenset[int], generated: int, limit: int,
               budget_cut: bool) -> tuple[SamplingParams, int, bool]:
    """(sampling, limit, budget_cut) of a step that starts `generated` tokens into the answer,
    with min_tokens applied: while the answer is shorter than min_tokens, its stop tokens are
    suppressed (logit bias), and the step is cut where the answer reaches min_tokens, so that the
    next step may end the answer again. (vLLM's own min_tokens would also hold off the step
    delimiter, a stop string: a step must still end there.)"""
    held = sampling.min_tokens - generated
    if held <= 0 or not stops:
        return sampling, limit, budget_cut
    bias = dict(sampling.logit_bias) | {t: SUPPRESS_BIAS for t in stops}
    sampling = replace(sampling, logit_bias=tuple(sorted(bias.items())))
    if held < limit:
        limit, budget_cut = held, False
    return sampling, limit, budget_cut


@dataclass
class StepRow:
    """A row of a decode loop (hf's dynamic loop, the static decoder, the replay engine)."""

    ids: list[int]  # the full context to continue
    sampling: SamplingParams
    limit: int  # new tokens allowed in this step
    budget_cut: bool  # the limit comes from the total budget, not the step size
    out: list[int] = field(default_factory=list)
    reason: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    stops: frozenset[int] | None = None  # the tokens that end the answer (None: the engine's EOS ids)
