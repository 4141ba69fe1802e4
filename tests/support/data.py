"""Small committed datasets the tests read."""
from __future__ import annotations

import json

from tests.support.paths import FIXTURES


def gsm8k(n: int) -> list[dict]:
    """The first n rows of the committed GSM8K sample ({"question", "answer"})."""
    rows = [json.loads(line) for line in (FIXTURES / "gsm8k_small.jsonl").read_text().splitlines() if line.strip()]
    return rows[:n]
