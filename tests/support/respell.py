"""A real engine whose steps come out in other tokens for the same text.

Two models that share a vocabulary can still write one text in different tokens: a draft whose
tokenizer lacks a merge the target's has writes "." + "\\n\\n" where the target writes ".\\n\\n".
Real small models do that too rarely to test on (Qwen2.5-0.5B kept from a merged token mostly
writes other text instead: tests/engines/test_lossless.py), so this wrapper re-spells a real
engine's steps the way such a tokenizer would: each token in `split` becomes its pieces, the text
and everything else unchanged. The model still conditions on the re-spelled ids of its own
earlier steps, as that draft would.
"""
from __future__ import annotations

from orchestrator.types import Step, StepRequest


class Respelled:
    def __init__(self, engine, split: dict[int, list[int]]) -> None:
        self.engine, self.split = engine, split

    def __getattr__(self, name: str):  # tokenizer_key, info, ...: the engine's own
        return getattr(self.engine, name)

    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        steps = await self.engine.generate_steps(requests)
        for s in steps:
            s.token_ids = [p for t in s.token_ids for p in self.split.get(t, [t])]
        return steps


def unmerged(tokenizer, *texts: str) -> dict[int, list[int]]:
    """For each text that is one token, that token -> the ids of its first character followed by
    the ids of the rest (".\\n\\n" -> "." + "\\n\\n")."""
    out = {}
    for text in texts:
        (merged,) = tokenizer.encode(text, add_special_tokens=False)
        out[merged] = tokenizer.encode(text[0], add_special_tokens=False) + tokenizer.encode(
            text[1:], add_special_tokens=False)
    return out
