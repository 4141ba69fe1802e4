"""`lookahead bench run --ar-from BENCH_JSON`: answer quality against the ar answers of an earlier run.

ar is the target decoding alone, so its answers do not depend on what else ran beside it: a run
that compares verifiers can read them from an earlier bench.json of the same questions and
settings instead of paying for ar again (on 2 CPU cores, a third of a quality run). Only quality
is compared across runs; speedup needs ar measured in the same run, so it stays empty."""
from __future__ import annotations

import json
from pathlib import Path

# Settings that change ar's answer; a reference run with any of them different is refused.
MUST_MATCH = ("target", "engine", "dtype", "max_tokens", "temperature", "top_p", "top_k", "seed", "system")


def load_ar_reference(path: str, args, rows: list[dict]) -> list[dict]:
    """The ar records of the bench.json at `path`, checked against this run's settings and
    questions (the same file rows with the same text). Raises ValueError saying what differs."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--ar-from {path}: cannot read a bench.json ({exc})") from exc
    cfg = data.get("config") or {}
    diff = [f"{k} {cfg.get(k)!r} there, {getattr(args, k, None)!r} here"
            for k in MUST_MATCH if k in cfg and cfg.get(k) != getattr(args, k, None)]
    if diff:
        raise ValueError(f"--ar-from {path}: its ar ran with other settings ({'; '.join(diff)})")
    stored = {q["index"]: q["question"] for q in data.get("questions", [])}
    other = [r["index"] for r in rows if r["index"] in stored and stored[r["index"]] != r["question"]]
    if other:
        raise ValueError(f"--ar-from {path}: file rows {other[:5]} hold other questions there (another --data?)")
    records = [r for r in data.get("records", []) if r.get("mode") == "ar"]
    wanted = {r["index"] for r in rows}
    records = [r for r in records if r["question"] in wanted]
    if not records:
        raise ValueError(f"--ar-from {path}: no ar answer to any of these questions (was it run with --modes ar?)")
    return records
