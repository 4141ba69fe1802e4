"""A scripted step engine for unit tests of the orchestrator's control flow only.

Every behavioural claim about real models is tested against real models elsewhere; this
fake exists so the algorithm's branches (mismatch, bonus, siblings, cancellation, EOS, the
delimiter gate) can be pinned exactly.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from orchestrator.types import Step, StepRequest


@dataclass
class ScriptedEngine:
    """Next step = script(position, prefix texts, sibling seed). Records calls and cancellations."""

    truth: list[str]  # the target's answer, step by step; the last one ends with EOS
    tokenizer_key: str = "fake"
    wrong_at: dict[int, object] = field(default_factory=dict)  # position -> True or set of wrong sibling indices
    cut_at: set[int] = field(default_factory=set)  # positions whose step is cut at the step limit
    delay: float = 0.0
    fail: bool = False
    calls: list[list[tuple[int, int | None]]] = field(default_factory=list)
    cancelled: int = 0
    seeds: list[int | None] = field(default_factory=list)

    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        self.calls.append([(len(r.prefix), r.sampling.seed) for r in requests])
        if self.fail:
            raise RuntimeError("engine down")
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.seeds += [r.sampling.seed for r in requests]
        # in a draft call the requests are the W siblings of one position
        return [self._step(r, k) for k, r in enumerate(requests)]

    def _step(self, r: StepRequest, sibling: int) -> Step:
        pos = len(r.prefix)
        on_track = all(s.text == t for s, t in zip(r.prefix, self.truth))
        if pos >= len(self.truth):
            return Step("", [], self.tokenizer_key, "eos")
        wrong = self.wrong_at.get(pos)
        is_wrong = (wrong is True) or (isinstance(wrong, set) and sibling in wrong)
        if not on_track:
            text = f"off-track {pos}\n\n"
        elif is_wrong:
            text = f"wrong {pos}.{sibling}\n\n"
        else:
            text = self.truth[pos]
        if pos in self.cut_at:
            text = text.rstrip("\n")
            return Step(text, [pos] * 3, self.tokenizer_key, "step_limit")
        reason = "eos" if on_track and pos == len(self.truth) - 1 and not is_wrong else "delimiter"
        return Step(text, [pos] * 3, self.tokenizer_key, reason)
