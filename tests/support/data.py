"""Small committed datasets the tests read."""
from __future__ import annotations

import json

from tests.support.paths import FIXTURES


def gsm8k(n: int) -> list[dict]:
    """The first n rows of the committed GSM8K sample ({"question", "answer"})."""
    rows = [json.loads(line) for line in (FIXTURES / "gsm8k_small.jsonl").read_text().splitlines() if line.strip()]
    return rows[:n]


#: the system prompt that makes the small models write one step per paragraph (blank-line
#: separated), so an answer of 64-96 tokens spans several steps and speculation reaches depth 2-3
STEP_SYSTEM = "Solve the problem step by step. Put a blank line between steps."


def step_messages(question: str) -> list[dict]:
    return [{"role": "system", "content": STEP_SYSTEM}, {"role": "user", "content": question}]
