"""The names every layer shares: request modes and schedules, defined once.

Config (pydantic), the OpenAI request model, the CLI and the benchmarks import these instead
of listing the values again (verifier kinds: verifier/kinds.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

#: ar: target only; sd: target with token-level speculation inside each step;
#: lr: step-level speculation (Lookahead Reasoning); lr+sd: both.
ModeName = Literal["ar", "sd", "lr", "lr+sd"]
MODES: tuple[str, ...] = get_args(ModeName)

#: what the core runs: with drafts (lr) or without (ar); sd is an engine setting, not a core mode
CoreMode = Literal["lr", "ar"]
CORE_MODES: tuple[str, ...] = get_args(CoreMode)

Schedule = Literal["sync", "async"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)


@dataclass(frozen=True)
class Mode:
    """A mode as its two layers of speculation.

    `steps`: the session drafts whole steps and a verifier rules on them (Lookahead Reasoning);
    a request chooses it. `tokens`: the target engine speculates tokens inside each step
    (n-gram, draft model, EAGLE); that is how the target engine is configured, and no request
    can switch it (`run_on`)."""

    steps: bool
    tokens: bool

    @classmethod
    def parse(cls, name: str) -> "Mode":
        layers = next((k for k, v in _NAMES.items() if v == name), None)
        if layers is None:
            raise ValueError(f"unknown mode {name!r}; expected one of {', '.join(MODES)}")
        return cls(*layers)

    @property
    def name(self) -> str:
        return _NAMES[self.steps, self.tokens]

    @property
    def core(self) -> str:
        """What the core runs (`LookaheadParams.mode`): with drafts or without."""
        return "lr" if self.steps else "ar"

    def run_on(self, target_speculates_tokens: bool) -> "Mode":
        """The mode that runs on a target engine that does (or does not) speculate tokens: the
        step layer as asked, the token layer as the engine is configured. Asking for token
        speculation from a target without it is an error (ValueError), never a silent `ar`."""
        if self.tokens and not target_speculates_tokens:
            raise ValueError(f"mode {self.name!r} needs token-level speculation on the target engine "
                             "(engine.token_speculation in the config); this target has none, ask for "
                             f"{Mode(self.steps, False).name!r}")
        return Mode(self.steps, target_speculates_tokens)


#: (steps, tokens) -> the mode's name, in the order of MODES
_NAMES: dict[tuple[bool, bool], str] = dict(zip(((False, False), (False, True), (True, False), (True, True)), MODES))
