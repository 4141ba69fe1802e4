"""Prompt-lookup proposals (token-level speculation inside a step), shared by hf's dynamic loop
and the static decoder; a module of its own so that code without the engine's config (the GPU
benchmark's replay engines) can use it."""
from __future__ import annotations


def lookup_proposal(context: list[int], k: int, max_ngram: int = 3) -> list[int]:
    """Tokens that followed the most recent earlier occurrence of the context's last n-gram."""
    if k <= 0:
        return []
    for n in range(min(max_ngram, len(context) - 1), 0, -1):
        tail = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start:start + n] == tail:
                return context[start + n:start + n + k]
    return []
