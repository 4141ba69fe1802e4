"""One step generation in flight, as every decode loop reads and fills it, and the two rules
every engine applies the same way: how long a step may run, and what a length cut is called."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from orchestrator.types import SamplingParams, StopReason


def step_limit(max_step_tokens: int, remaining: int) -> tuple[int, bool]:
    """(new tokens this step may take, whether the total budget set that limit): the step ends
    at `max_step_tokens` or where the answer's remaining budget runs out, whichever comes first."""
    return max(0, min(max_step_tokens, remaining)), remaining <= max_step_tokens


def cut_reason(budget_cut: bool) -> StopReason:
    """A step cut at its token limit: "budget" when the total budget set the limit (the answer
    is over), else "step_limit" (a step too long, not a step end)."""
    return "budget" if budget_cut else "step_limit"


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
