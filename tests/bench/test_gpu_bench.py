"""The GPU benchmark (benchmarks/gpu/gpu_bench.py) on CPU: the device command's smoke run covers every
unit of every section whatever the machine's speed, the time budget cuts work section by section,
the hard limit stops the run with its files written, and docs/gpu.md holds a device command that
fits one call. The result says plainly that weights are random and acceptance is replayed."""
from __future__ import annotations

import json
import math
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.gpu import gpu_bench
from benchmarks.gpu.gpu_budget import STOPPED_EXIT, Budget
from benchmarks.gpu.gpu_report import SECTIONS
from benchmarks.gpu.model_shapes import QWEN25
from tests.support.paths import ROOT

pytestmark = pytest.mark.timeout(600)

# Python packages the project uses that the device image lacks (its package list): the device run
# must not import them. The smoke run below runs with them unimportable.
NOT_ON_DEVICE = ("ray", "pydantic", "vllm", "fastapi", "starlette", "uvicorn", "openai", "grpc_tools")
_AS_ON_DEVICE = f"""
import runpy, sys
class NotOnDevice:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_ON_DEVICE!r}:
            raise ImportError(f"{{name}} is not installed on the device")
sys.meta_path.insert(0, NotOnDevice())
sys.argv = ["benchmarks.gpu.gpu_bench"] + sys.argv[1:]
runpy.run_module("benchmarks.gpu.gpu_bench", run_name="__main__", alter_sys=True)
"""


def _run_as_on_device(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _AS_ON_DEVICE, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=540)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_smoke_run_of_the_device_command_covers_every_section(tmp_path):
    proc = _run_as_on_device(["--device", "cpu", "--smoke", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = tmp_path.glob("gpu_bench-smoke-*.json")
    assert path.with_suffix(".png").stat().st_size > 10_000
    r = json.loads(path.read_text())
    assert "preflight: capture none" in proc.stdout and "bernoulli grid: 48 runs, 0 skipped" in proc.stdout

    assert r["weights"] == "random" and r["acceptance"] == "replayed"
    assert "RANDOM WEIGHTS" in r["label"] and "REPLAYED" in r["label"]
    assert r["config"]["budget_s"] is None and "stopped" not in r and not r["notes"]
    assert set(SECTIONS) <= set(r)
    pf = r["preflight"]
    assert pf["capture"] == "none" and pf["static_equals_full_forward"] is True
    assert pf["checks"] == {"batch_of_2": True, "prefix_reuse": True, "prompt_lookup": True}
    assert pf["lookup_proposals"] > 0 and r["capture_used"] == {"target": "none", "draft": "none"}
    assert r["bandwidth"]["gb_per_s"] > 0

    assert set(r["decode"]) == set(QWEN25)  # every size of the table, none skipped
    for entry in r["decode"].values():
        assert entry["bound_ms"] > 0 and _number(entry["ms_per_token"]["1"])
    assert sorted(int(b) for b in r["decode"]["14b"]["ms_per_token"]) == list(range(1, 8))  # 1 .. g+1, g <= 6
    assert r["sizes"] == {"timed": ["1.5b", "7b", "32b"], "skipped": [], "failed": []}
    assert _number(r["ratios"]["draft_over_target_per_token"])

    bern = r["bernoulli"]
    assert bern["skipped"] == [] and "ar_repeat" in bern
    assert {(x["b"], x["g"], x["schedule"]) for x in bern["runs"]} == {
        (b, g, s) for b in gpu_bench.B_VALUES for g in gpu_bench.G_VALUES for s in ("sync", "async")}
    assert len(bern["runs"]) == 48
    for x in bern["runs"]:
        assert x["speedup"] > 0 and _number(x["predicted"]) and x["cycles"] > 0
    assert set(bern["cycle_breakdown_b0.5_g4"]["ms_per_cycle"]) == {"draft", "target", "verify", "orchestration"}

    traces = r["traces"]["files"]
    assert traces and all(t["questions"] == 1 and not t["questions_skipped"] for t in traces)
    for t in traces:
        assert [x["schedule"] for x in t["runs"]] == ["sync", "async"] and all(x["speedup"] > 0 for x in t["runs"])
        assert t["ar"]["tokens"] == t["runs"][0]["tokens"] == t["runs"][1]["tokens"]  # same answer replayed
    lsd = r["lr_sd"]
    assert lsd["sd"]["lookup"]["draft_tokens"] > 0
    assert [x["b"] for x in lsd["lr_sd"]] == [0.5, 0.7] and all("wall_s" in x for x in lsd["lr_sd"])
    assert [x["b"] for x in r["policy"]["runs"]] == list(gpu_bench.B_VALUES)
    assert all(x["cycles"] > 0 and "depth_counts" in x for x in r["policy"]["runs"])  # the policy's choices
    assert "skipped_all" in r["serve"]


def test_budget_gives_each_section_its_share_of_what_is_left():
    t = [0.0]
    budget = Budget(100.0, reserve_s=10.0, weights={"a": 1.0, "b": 3.0}, now=lambda: t[0], start=0.0)
    t[0] = 10.0
    a = budget.section("a")  # 80 s left: a gets a quarter
    assert a.fits(19.0) and not a.fits(21.0)
    t[0] = 20.0  # a used 10 of its 20 s: b gets all that is left, the 10 s a left unused included
    b = budget.section("b")
    assert b.fits(69.0) and not b.fits(71.0)
    t[0] = 95.0
    assert budget.left() < 0 and not budget.fits(0.0) and not budget.section("b").fits(0.0)
    free = Budget(None, weights={"a": 1.0})
    assert free.section("a").fits(1e12) and free.fits(1e12)


def test_an_exhausted_budget_skips_every_timed_section_and_still_writes(tmp_path, capsys):
    assert gpu_bench.main(["--device", "cpu", "--smoke", "--budget-s", "0", "--hard-limit-s", "1e9",
                           "--out", str(tmp_path)]) == 0
    [path] = tmp_path.glob("gpu_bench-smoke-*.json")
    assert path.with_suffix(".png").exists()
    r = json.loads(path.read_text())
    assert r["preflight"]["static_equals_full_forward"] is True  # the preflight runs whatever the budget
    assert r["decode"] == {k: {"skipped": "time budget"} for k in QWEN25}
    for name in ("bernoulli", "traces", "lr_sd", "policy", "sizes"):
        assert r[name] == {"skipped_all": "time budget"}, name
    assert "bernoulli: time budget" in capsys.readouterr().out


def test_a_capture_that_fails_in_preflight_sends_the_run_on_uncaptured(tmp_path):
    # CUDA graphs cannot be captured on a CPU: the preflight records why, and the run goes on with "none"
    assert gpu_bench.main(["--device", "cpu", "--smoke", "--capture", "graph", "--budget-s", "0",
                           "--hard-limit-s", "1e9", "--out", str(tmp_path)]) == 0
    r = json.loads(next(tmp_path.glob("gpu_bench-smoke-*.json")).read_text())
    pf = r["preflight"]
    assert pf["capture"] == "graph" and pf["graph_captured"] is False and "needs a CUDA device" in pf["error"]
    assert r["config"]["capture"] == "graph" and r["capture_used"] == {"target": "none", "draft": "none"}
    assert any("capture 'graph' failed in preflight" in n for n in r["notes"])
    assert any("preflight FAILED" in n for n in r["notes"])


def test_the_hard_limit_stops_the_run_with_its_files_written(tmp_path):
    proc = _run_as_on_device(["--device", "cpu", "--smoke", "--hard-limit-s", "0", "--out", str(tmp_path)])
    assert proc.returncode == STOPPED_EXIT, proc.stderr[-3000:]
    assert "STOPPED: hard limit of 0 s reached" in proc.stderr
    [path] = tmp_path.glob("gpu_bench-smoke-*.json")
    assert path.with_suffix(".png").exists()
    r = json.loads(path.read_text())
    assert r["stopped"]["why"] == "hard limit of 0 s reached" and r["weights"] == "random"
    assert any("stopped early" in n for n in r["notes"])


def test_sigterm_stops_the_run_with_what_it_has(tmp_path):
    """What `timeout` sends on the device: the run writes its files and exits with status 3."""
    proc = subprocess.Popen([sys.executable, "-c", _AS_ON_DEVICE, "--device", "cpu", "--smoke", "--out", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not any(json.loads(p.read_text() or "{}").get("preflight") for p in tmp_path.glob("*.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its preflight was written"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == STOPPED_EXIT, err[-3000:]
    [path] = tmp_path.glob("gpu_bench-smoke-*.json")
    r = json.loads(path.read_text())
    assert r["stopped"]["why"] == "SIGTERM received" and r["preflight"]["static_equals_full_forward"] is True
    assert path.with_suffix(".png").exists()


def test_docs_give_a_device_command_that_fits_one_call():
    text = (ROOT / "docs" / "gpu.md").read_text()
    [line] = [x for x in text.splitlines() if "python3 -m benchmarks.gpu.gpu_bench --device cuda" in x and "$OUT" in x
              and x.startswith("set -o pipefail")]
    [limit] = re.findall(r"timeout_s[=:]\s*(\d+)", text)
    words = shlex.split(line.split("python3 -m benchmarks.gpu.gpu_bench", 1)[1].split("2>&1")[0])
    args = gpu_bench.parse(words)
    kill = re.search(r"timeout -k (\d+) (\d+) ", line)
    assert args.device == "cuda" and args.out == "$OUT" and not args.smoke
    # the run's own hard limit, then timeout's TERM, then its KILL, all inside the call's limit of 8 minutes
    assert args.budget_s < args.hard_limit_s < int(kill[2]) < int(kill[2]) + int(kill[1]) < int(limit) <= 480
