"""Exact and normalised step comparison.

`exact` is the verifier of lossless mode: with a shared tokenizer the draft must have the target's
token ids (and text), across tokenizers the target's text byte for byte (orchestrator/accept.py,
`same_tokens`). `normalized` folds runs of whitespace; it is the cheap shortcut the reference runs
before any judge, and it is not lossless. Case is kept: in a step "N" and "n" can name different
quantities.
"""
from __future__ import annotations

import re

from orchestrator.accept import same_tokens
from orchestrator.types import Verdict, VerifyPair


class ExactVerifier:
    name = "exact"

    async def verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        out = []
        for p in pairs:
            same = same_tokens(p.draft, p.target)
            detail = "" if same or p.draft.text != p.target.text else "same text, other token ids"
            out.append(Verdict(same, float(same), self.name, detail))
        return out


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class NormalizedVerifier:
    name = "normalized"

    async def verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        out = []
        for p in pairs:
            same = normalize(p.draft.text) == normalize(p.target.text)
            out.append(Verdict(same, float(same), self.name))
        return out
