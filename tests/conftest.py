from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"


def gsm8k(n: int) -> list[dict]:
    rows = [json.loads(line) for line in (FIXTURES / "gsm8k_small.jsonl").read_text().splitlines() if line.strip()]
    return rows[:n]


@pytest.fixture(scope="module")
def serve_app():
    """The real application on local Ray (CPU, fake GPUs), one per test module."""
    from tests.serve_fixture import start, stop, test_config

    handle, _ = start(test_config())
    yield handle
    stop()
