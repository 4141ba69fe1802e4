"""benchmarks/bench/merge.py: the parts of a time-boxed run (the second with --skip) summarized as one
run. Checked on the committed 30-question quality run, cut in two: the merged summary must be
the one the whole run wrote."""
from __future__ import annotations

import copy
import json

import pytest

from benchmarks.bench.merge import main, merge
from tests.support.paths import ROOT

WHOLE = ROOT / "benchmarks" / "results" / "quality-0.5b-drafts-1.5b" / "bench.json"


def _split(whole: dict, at: int) -> tuple[dict, dict]:
    first, second = copy.deepcopy(whole), copy.deepcopy(whole)
    first["records"] = [r for r in whole["records"] if r["question"] < at]
    second["records"] = [r for r in whole["records"] if r["question"] >= at]
    first["config"].update(limit=at, time_budget=30)
    second["config"].update(limit=whole["n_questions"] - at, skip=at, out="/elsewhere")
    return first, second


def _without_cost_model(summary: dict) -> dict:
    return {name: {k: v for k, v in m.items() if k != "cost_model"} for name, m in summary.items()}


def test_two_parts_summarize_as_the_whole_run():
    whole = json.loads(WHOLE.read_text())
    merged = merge(list(_split(whole, 12)), ["a.json", "b.json"])
    assert merged["n_questions"] == 30 and merged["skipped_questions"] == []
    assert [r["question"] for r in merged["records"]] == [r["question"] for r in whole["records"]]
    # accuracy, same answer as ar, acceptance, strict counts, latency: all exactly the whole run's
    assert _without_cost_model(merged["summary"]) == _without_cost_model(whole["summary"])
    lr, lr_whole = merged["summary"]["lr[embedding]"], whole["summary"]["lr[embedding]"]
    assert lr["same_answer_as_ar"] == pytest.approx(23 / 30, abs=1e-4) and lr["acceptance"]["accepted"] == 76
    # the calibration travels rounded to 4 places, so the prediction may move in its last digit
    assert lr["cost_model"]["predicted_speedup"] == pytest.approx(lr_whole["cost_model"]["predicted_speedup"],
                                                                  abs=2e-3)
    assert [p["questions"] for p in merged["parts"]] == [list(range(12)), list(range(12, 30))]


def test_parts_without_ar_compare_with_an_earlier_ar(tmp_path):
    whole = json.loads(WHOLE.read_text())
    parts = _split(whole, 20)
    for p in parts:  # lr alone, as a verifier comparison run with --ar-from
        p["records"] = [r for r in p["records"] if r["mode"] != "ar"]
        p["config"].update(modes="lr", ar_from=str(WHOLE))
    files = []
    for i, p in enumerate(parts):
        files.append(tmp_path / f"part{i}.json")
        files[-1].write_text(json.dumps(p))
    assert main([str(f) for f in files] + ["--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "bench.json").read_text())
    lr = merged["summary"]["lr[embedding]"]
    assert lr["ar_from_earlier_run"] and lr["compared_with_ar"] == 30
    assert lr["same_answer_as_ar"] == whole["summary"]["lr[embedding]"]["same_answer_as_ar"]
    assert lr["speedup_vs_ar"] is None
    assert "same final answer as ar" in (tmp_path / "merged" / "bench.md").read_text()


def test_parts_of_different_runs_or_overlapping_questions_are_refused(tmp_path, capsys):
    whole = json.loads(WHOLE.read_text())
    first, second = _split(whole, 10)
    second["config"]["max_tokens"] = 256
    with pytest.raises(ValueError, match="max_tokens 384 vs 256"):
        merge([first, second], ["a.json", "b.json"])
    first, second = _split(whole, 10)
    second["records"].append(first["records"][0])
    with pytest.raises(ValueError, match=r"question 0 \(.*\) ran in both a.json and b.json"):
        merge([first, second], ["a.json", "b.json"])
    assert main([str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    assert "merge:" in capsys.readouterr().err
