"""GSM8K questions for a benchmark run: a JSONL file of {"question", "answer": "... #### N"}."""
from __future__ import annotations

import json
import random
from pathlib import Path

from benchmarks.grading import gold_answer

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gsm8k_small.jsonl"


def load_questions(path: str | Path, limit: int, seed: int | None = None) -> list[dict]:
    """The first `limit` rows (after a seeded shuffle when `seed` is given), each with its
    index in the file and the numeric gold answer."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if line.strip():
                row = json.loads(line)
                rows.append({"index": i, "question": row["question"], "answer": row["answer"],
                             "gold": gold_answer(row["answer"])})
    if seed is not None:
        random.Random(seed).shuffle(rows)
    return rows[:max(limit, 0)]
