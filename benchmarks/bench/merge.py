"""`lookahead bench merge PART.json PART.json ... --out DIR`: one report from the parts of a run.

A long run stopped by --time-budget is finished by running the same command again with
--skip N (the questions it did not reach). This joins the parts' records and summarizes them
as one run. The parts must agree on every setting that changes an answer or a timing, and no
question may run twice. Answers and acceptance join exactly; each part calibrated at its own
start, so the cost model uses the first part's calibration (every part's is kept under
"parts")."""
from __future__ import annotations

import argparse
import json
import sys
from argparse import Namespace
from pathlib import Path

from benchmarks.bench.calibrate import Calibration
from benchmarks.bench.run import main_run_specs
from benchmarks.bench.summary import summarize

# Settings that may differ between the parts of one run: which questions, where output goes.
PER_PART = frozenset({"limit", "skip", "time_budget", "out", "record_traces", "quiet", "ar_from", "func"})


def merge(parts: list[dict], names: list[str], ar_from: str | None = None) -> dict:
    """The parts (bench.json contents, named `names` in errors) as one bench result."""
    first = parts[0]["config"]
    for name, part in zip(names[1:], parts[1:]):
        diff = sorted(k for k in (set(first) | set(part["config"])) - PER_PART
                      if first.get(k) != part["config"].get(k))
        if diff:
            raise ValueError(f"{name} ran with other settings than {names[0]}: "
                             + "; ".join(f"{k} {first.get(k)!r} vs {part['config'].get(k)!r}" for k in diff))
    seen: dict[tuple, str] = {}
    records = []
    for name, part in zip(names, parts):
        for r in part.get("records", []):
            key = (r["question"], r["mode"])
            if key in seen:
                raise ValueError(f"question {r['question']} ({r['mode']}) ran in both {seen[key]} and {name}")
            seen[key] = name
            records.append(r)
    records.sort(key=lambda r: (r["question"], r["order"]))
    ran = {r["question"] for r in records}
    questions = {q["index"]: q for part in parts for q in part.get("questions", [])}
    config = dict(first, limit=len(ran), skip=0, ar_from=ar_from or first.get("ar_from"))
    modes, specs = main_run_specs(Namespace(**config))
    ar_reference = None
    if config["ar_from"] and "ar" not in modes:
        from benchmarks.bench.ar_reference import load_ar_reference

        rows = [questions[i] for i in sorted(ran)]
        ar_reference = load_ar_reference(config["ar_from"], Namespace(**config), rows)
    calib = Calibration.from_dict(parts[0]["calibration"]) if parts[0].get("calibration") else None
    skipped = sorted({i for part in parts for i in part.get("skipped_questions", [])} - ran)
    return {
        "config": config, "environment": parts[0]["environment"], "n_questions": len(ran),
        "questions": [questions[i] for i in sorted(questions)], "records": records, "skipped_questions": skipped,
        "summary": summarize(records, specs, calib, config["schedule"], ar_reference),
        "traces": [t for part in parts for t in part.get("traces", [])],
        "calibration": parts[0].get("calibration"),
        "parts": [{"file": name, "questions": sorted({r["question"] for r in part.get("records", [])}),
                   "environment": part.get("environment"), "calibration": part.get("calibration"),
                   "timing": part.get("timing")} for name, part in zip(names, parts)],
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.bench.run import publish

    p = argparse.ArgumentParser(prog="lookahead bench merge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", nargs="+", metavar="BENCH_JSON", help="the parts, the first run first")
    p.add_argument("--out", required=True, help="directory for the merged bench.json and bench.md")
    p.add_argument("--ar-from", metavar="BENCH_JSON",
                   help="ar answers to compare with (default: the first part's --ar-from)")
    args = p.parse_args(argv)
    try:
        parts = [json.loads(Path(f).read_text()) for f in args.parts]
        result = merge(parts, args.parts, args.ar_from)
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as exc:
        print(f"merge: {exc}", file=sys.stderr)
        return 2
    publish(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
