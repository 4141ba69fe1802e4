"""Stop strings (OpenAI `stop`) over a stream of steps: the text is cut before the first stop
string, wherever it falls, inside one step or across a step boundary.

Engines never see the stop strings: a step boundary would hide a stop string split across
two steps, and drafted steps would each need their own check. The consumer of
`Lookahead.stream()` passes every step through a `StopStrings` instead; text that could be
the start of a stop string is held back until the next step decides it, so streamed text
never has to be taken back. On a match the consumer stops iterating, which cancels the
session (the stream's `finally`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

from orchestrator.types import GenerationResult, Step


@dataclass(frozen=True)
class Piece:
    """Released text of one step: the whole step, or a part when text is held back or cut."""

    step: Step
    text: str
    first: bool  # the step's first released piece
    last: bool  # nothing more of this step will be released


def normalize_stops(stop: str | Iterable[str] | None) -> tuple[str, ...]:
    """OpenAI's `stop`: a string, a list of strings, or nothing."""
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError("stop strings must be non-empty strings")
    return tuple(dict.fromkeys(stops))  # drop duplicates, keep order


class StopStrings:
    def __init__(self, stops: str | Iterable[str] | None = None, include: bool = False) -> None:
        """`include`: the matched stop string stays at the end of the text (vLLM's
        include_stop_str_in_output)."""
        self.stops = normalize_stops(stops)
        self.include = include
        self.stopped = False  # a stop string was found: the answer ends here
        self._held: list[list] = []  # [step, unreleased text, released anything yet]
        self._released: dict[int, tuple[Step, str]] = {}  # id(step) -> (step, released text), in order

    def feed(self, steps: Iterable[Step]) -> list[Piece]:
        """The pieces that can be shown now; after a match, nothing more."""
        if self.stopped:
            return []
        for step in steps:
            self._held.append([step, step.text, False])
        text = "".join(h[1] for h in self._held)
        found = min(((i, s) for s in self.stops if (i := text.find(s)) >= 0), default=None,
                    key=lambda m: (m[0], -len(m[1])))  # the first match; of two there, the longer
        if found is not None:
            cut = found[0] + len(found[1]) if self.include else found[0]
            self.stopped = True
            return self._release(cut, ends=True)
        return self._release(len(text) - self._partial_tail(text), ends=False)

    def finish(self) -> list[Piece]:
        """The stream ended without a match: release what was held back."""
        if self.stopped:
            return []
        return self._release(sum(len(h[1]) for h in self._held), ends=False)

    def result(self, result: GenerationResult) -> GenerationResult:
        """The session's result as released: text and steps cut at the match, finish_reason "stop"."""
        if not self.stops:
            return result
        steps = [dataclasses.replace(step, text=text) for step, text in self._released.values()]
        reason = "stop" if self.stopped else result.finish_reason
        return GenerationResult("".join(s.text for s in steps), steps, result.stats, reason)

    # -- helpers --------------------------------------------------------------------------
    def _partial_tail(self, text: str) -> int:
        """Length of the longest end of text that is the start of a stop string."""
        longest = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _release(self, n: int, ends: bool) -> list[Piece]:
        """Release the first n held characters; `ends`: the answer ends there (a match at n)."""
        pieces: list[Piece] = []
        while self._held:
            step, rest, started = self._held[0]
            take = rest[:n]
            whole = take == rest
            # an empty step (EOS with no text) still passes through, in its place
            if take or (whole and not started and not ends):
                pieces.append(Piece(step, take, first=not started, last=whole or ends))
                prev = self._released.get(id(step), (step, ""))[1]
                self._released[id(step)] = (step, prev + take)
            n -= len(take)
            if not whole:
                self._held[0][1:] = [rest[len(take):], started or bool(take)]
                break
            self._held.pop(0)
            if n == 0 and ends:
                break
        if ends:
            self._held = []
        return pieces
