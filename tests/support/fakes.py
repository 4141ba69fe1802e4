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
    # positions whose step has the right text written with other token ids (a blank line as two
    # newline tokens where the target writes one)
    retokenize_at: set[int] = field(default_factory=set)
    delay: float = 0.0
    delay_at: dict[int, float] = field(default_factory=dict)  # position -> delay of a call there
    row_delay: float = 0.0  # extra delay per row after the first: a batch that is not free
    gates: dict[int, asyncio.Event] = field(default_factory=dict)  # calls at position wait for the event
    fail: bool = False
    fail_calls: set[int] = field(default_factory=set)  # indices of calls (0-based) that raise
    calls: list[list[tuple[int, int | None]]] = field(default_factory=list)
    prefixes: list[tuple[tuple[str, ...], int | None]] = field(default_factory=list)  # (prefix texts, seed) per row
    cancelled: int = 0
    seeds: list[int | None] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        index = len(self.calls)
        self.calls.append([(len(r.prefix), r.sampling.seed) for r in requests])
        self.prefixes += [(tuple(s.text for s in r.prefix), r.sampling.seed) for r in requests]
        if self.fail or index in self.fail_calls:
            raise RuntimeError("engine down")
        pos = len(requests[0].prefix)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if pos in self.gates:
                await self.gates[pos].wait()
            delay = self.delay_at.get(pos, self.delay) + self.row_delay * (len(requests) - 1)
            if delay:
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        self.seeds += [r.sampling.seed for r in requests]
        # in a draft call the requests are the W siblings of one position
        return [self._step(r, k) for k, r in enumerate(requests)]

    def _step(self, r: StepRequest, sibling: int) -> Step:
        pos = len(r.prefix)
        # a prefix with the right text in other tokens is not what plain decoding conditions on:
        # what follows it goes its own way, as a real model's may
        on_track = all(s.text == t and -1 not in s.token_ids for s, t in zip(r.prefix, self.truth))
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
        ids = [pos, pos, -1, -1] if pos in self.retokenize_at else [pos] * 3
        return Step(text, ids, self.tokenizer_key, reason)
