"""Exact and normalised step comparison.

`exact` is the verifier of lossless mode: byte-identical text (the core then keeps the
target's own tokens). `normalized` folds whitespace and case; it is the cheap shortcut the
reference runs before any judge, and it is not lossless.
"""
from __future__ import annotations

import re

from orchestrator.types import Verdict, VerifyPair


class ExactVerifier:
    name = "exact"

    async def verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        return [Verdict(p.draft.text == p.target.text, float(p.draft.text == p.target.text), self.name)
                for p in pairs]


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


class NormalizedVerifier:
    name = "normalized"

    async def verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        out = []
        for p in pairs:
            same = normalize(p.draft.text) == normalize(p.target.text)
            out.append(Verdict(same, float(same), self.name))
        return out
