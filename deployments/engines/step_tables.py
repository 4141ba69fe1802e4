"""The step-end rule as token tables: which tokens are EOS, contain the delimiter "\\n\\n",
start or end with "\\n". The static decoder applies it on the device (deployments/engines/
static_step.py), prompt lookup on the host (HostRule); both decide exactly as hf's dynamic loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from deployments.engines.rows import cut_reason

# reason codes written by the device
RUNNING, EOS, DELIMITER, LIMIT = 0, 1, 2, 3
# token flag bits
F_EOS, F_DD, F_STARTS_NL, F_ENDS_NL = 1, 2, 4, 8


@dataclass
class StopTables:
    """Per-token flags on the device: EOS, contains "\\n\\n", starts with "\\n", ends with "\\n"."""

    flags: torch.Tensor  # uint8 [vocab]

    @classmethod
    def from_tokenizer(cls, tokenizer, eos_ids: Sequence[int], vocab_size: int, delimiter: str = "\n\n") -> "StopTables":
        if delimiter != "\n\n":
            raise ValueError("the step-end tables are built for the '\\n\\n' delimiter")
        n = min(len(tokenizer), vocab_size)
        pieces = tokenizer.batch_decode([[i] for i in range(n)])  # as hf's loop decodes one token
        flags = torch.zeros(vocab_size, dtype=torch.uint8)
        for i, p in enumerate(pieces):
            if "\n" in p:
                flags[i] = ((F_DD if "\n\n" in p else 0) | (F_STARTS_NL if p.startswith("\n") else 0)
                            | (F_ENDS_NL if p.endswith("\n") else 0))
        for e in eos_ids:
            if 0 <= e < vocab_size:
                flags[e] |= F_EOS
        return cls(flags)

    @classmethod
    def none(cls, vocab_size: int) -> "StopTables":
        """No stops at all: every row runs to its token limit (replayed step lengths)."""
        return cls(torch.zeros(vocab_size, dtype=torch.uint8))

    def to(self, device) -> "StopTables":
        return StopTables(self.flags.to(device))


class HostRule:
    """The same step-end rule on the host, one token at a time (prompt lookup verifies on the host anyway)."""

    def __init__(self, flags: list[int]) -> None:
        self.flags = flags  # StopTables.flags as a host list
        self.prev_nl = False  # only this step's previous token counts, as in hf's loop

    def advance(self, row, token: int) -> bool:
        """hf's `_advance` by table lookup: append the token, False when the step is over."""
        f = self.flags[token] if 0 <= token < len(self.flags) else 0
        if row.cancelled.is_set():
            row.reason = "step_limit"
            return False
        if f & F_EOS:
            row.reason = "eos"
            return False
        row.out.append(token)
        ends = bool(f & F_DD) or (self.prev_nl and bool(f & F_STARTS_NL))
        self.prev_nl = bool(f & F_ENDS_NL)
        if ends:
            row.reason = "delimiter"
            return False
        if len(row.out) >= row.limit:
            row.reason = cut_reason(row.budget_cut)
            return False
        return True

