"""The names every layer shares: request modes, schedules and verifier kinds, defined once.

Config (pydantic), the OpenAI request model, the CLI and the verifier factory all import these
instead of listing the values again.
"""
from __future__ import annotations

from typing import Literal, get_args

#: ar: target only; sd: target with token-level speculation inside each step;
#: lr: step-level speculation (Lookahead Reasoning); lr+sd: both.
Mode = Literal["ar", "sd", "lr", "lr+sd"]
MODES: tuple[str, ...] = get_args(Mode)

#: what the core runs: with drafts (lr) or without (ar); sd is an engine setting, not a core mode
CoreMode = Literal["lr", "ar"]
CORE_MODES: tuple[str, ...] = get_args(CoreMode)

Schedule = Literal["sync", "async"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)

VerifierKind = Literal["exact", "normalized", "embedding", "llm-judge", "target-score"]
VERIFIER_KINDS: tuple[str, ...] = get_args(VerifierKind)


def core_mode(mode: str) -> str:
    """`lr` and `lr+sd` speculate steps; `ar` and `sd` decode with the target alone."""
    return "lr" if mode.startswith("lr") else "ar"
