"""GSM8K grading: read the final number from a model's answer and compare it with the gold.

The model's answer is whatever number it states last (a \\boxed{} or "#### N" answer wins
when present). "$1,200.50" -> 1200.5; thousands separators only count in proper groups
("1,200" is 1200 but "2,3" is the two numbers 2 and 3); a minus sign counts only when it
is not a subtraction ("12 - 5" ends in 5, "= -5" is -5). Gold answers are "... #### N".
"""
from __future__ import annotations

import re

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|-?\.\d+")
_BOXED = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_HASHES = re.compile(r"####\s*([^\n]*)")


def _to_float(token: str) -> float | None:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


def numbers(text: str) -> list[float]:
    """Every number in `text`, in order, as floats."""
    out = []
    for m in _NUMBER.finditer(text):
        token = m.group(0)
        before = text[:m.start()].rstrip()
        if token.startswith("-") and before and (before[-1].isalnum() or before[-1] in ")]"):
            token = token[1:]  # "12-5", "12 - 5": a subtraction, not a negative number
        value = _to_float(token)
        if value is not None:
            out.append(value)
    return out


def extract_answer(text: str) -> float | None:
    """The model's final answer: last number in the last \\boxed{}, after the last "####",
    or else in the whole text. None when the text has no number."""
    for pattern in (_BOXED, _HASHES):
        found = pattern.findall(text)
        if found:
            nums = numbers(found[-1])
            if nums:
                return nums[-1]
    nums = numbers(text)
    return nums[-1] if nums else None


def gold_answer(answer: str) -> float:
    """The number after "####" in a GSM8K reference answer."""
    m = _HASHES.search(answer)
    if not m:
        raise ValueError(f"GSM8K answer without '#### N': {answer[-80:]!r}")
    nums = numbers(m.group(1))
    if not nums:
        raise ValueError(f"no number after '####': {m.group(1)!r}")
    return nums[0]


def is_correct(predicted: float | None, gold: float, rel_tol: float = 1e-6) -> bool:
    return predicted is not None and abs(predicted - gold) <= rel_tol * max(1.0, abs(gold))
