"""The GPU benchmark's smoke mode on CPU: every section runs on toy shapes of the same configs,
and the result says plainly that weights are random and acceptance is replayed."""
from __future__ import annotations

import json

import pytest

from benchmarks.gpu import gpu_bench
from benchmarks.gpu.model_shapes import QWEN25

pytestmark = pytest.mark.timeout(600)


def test_smoke_run_writes_every_section(tmp_path):
    assert gpu_bench.main(["--device", "cpu", "--smoke", "--out", str(tmp_path)]) == 0
    [path] = tmp_path.glob("gpu_bench-smoke-*.json")
    assert path.with_suffix(".png").stat().st_size > 10_000
    r = json.loads(path.read_text())

    assert r["weights"] == "random" and r["acceptance"] == "replayed"
    assert "RANDOM WEIGHTS" in r["label"] and "REPLAYED" in r["label"]
    assert r["preflight"] == {"capture": "none", "static_equals_full_forward": True}
    assert r["bandwidth"]["gb_per_s"] > 0

    assert set(r["decode"]) == set(QWEN25)  # every size of the table
    for entry in r["decode"].values():
        assert entry["bound_ms"] > 0 and entry["ms_per_token"]["1"] > 0
    assert sorted(int(b) for b in r["decode"]["14b"]["ms_per_token"]) == list(range(1, 8))  # 1 .. g+1, g <= 6
    assert r["ratios"]["draft_over_target_per_token"] > 0

    runs = r["bernoulli"]["runs"]
    assert not r["bernoulli"]["skipped"]
    assert {(x["b"], x["g"], x["schedule"]) for x in runs} == {
        (b, g, s) for b in gpu_bench.B_VALUES for g in gpu_bench.G_VALUES for s in ("sync", "async")}
    for x in runs:
        assert x["speedup"] > 0 and x["predicted"] > 0 and x["cycles"] > 0
    assert set(r["bernoulli"]["cycle_breakdown_b0.5_g4"]["ms_per_cycle"]) == {"draft", "target", "verify",
                                                                              "orchestration"}

    traces = r["traces"]["files"]
    assert traces and all(len(t["runs"]) == 2 and t["runs"][0]["speedup"] > 0 for t in traces)
    assert r["lr_sd"]["sd"]["lookup"]["draft_tokens"] > 0
    assert [x["b"] for x in r["lr_sd"]["lr_sd"]] == [0.5, 0.7]
    assert all("depth_counts" in x for x in r["policy"]["runs"])
    assert "skipped" in r["serve"]
