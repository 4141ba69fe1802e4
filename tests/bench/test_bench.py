"""`lookahead bench`: grading, the cost model, summaries, the report writer, and (slow) a real run."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from benchmarks.bench.calibrate import Calibration
from benchmarks.cost_model import lr_inputs, predicted_speedup, steps_per_cycle
from benchmarks.data import DEFAULT_DATA, load_questions
from benchmarks.grading import extract_answer, gold_answer, is_correct
from benchmarks.bench.modes import ModeSpec, main_specs
from benchmarks.bench.report import write_report
from benchmarks.bench.summary import percentile, summarize
from benchmarks.bench.sweep import sweep_result, sweep_specs
from orchestrator.types import Prompt
from tests.support.data import gsm8k

# -- grading ----------------------------------------------------------------------------


def test_gold_answers_of_the_fixture():
    rows = gsm8k(24)
    golds = [gold_answer(r["answer"]) for r in rows]
    assert golds[:3] == [27, 8, 80]
    assert all(isinstance(g, float) for g in golds)


@pytest.mark.parametrize("answer, gold", [
    ("In total, he has 12+3+6+6=<<12+3+6+6=27>>27 insects.\n#### 27", 27),
    ("Christopher has $16.00 ...\n#### 8", 8),
    ("She earns 1,200 a month.\n#### 1,200", 1200),
    ("The temperature drops to -3 degrees.\n#### -3", -3),
    ("#### 0.5", 0.5),
])
def test_gold_answer(answer, gold):
    assert gold_answer(answer) == gold


def test_gold_answer_needs_hashes():
    with pytest.raises(ValueError):
        gold_answer("the answer is 5")


@pytest.mark.parametrize("text, expected", [
    # realistic model endings
    ("To find the total, we add: 12 + 3 + 6 + 6 = 27.\n\nCalvin has 27 insects in his collection.", 27),
    ("Therefore, Christopher has \\(\\boxed{8}\\) dollars more than Karen.", 8),
    ("So the final answer is \\boxed{1,200}. Check: 600 * 2 = 1200", 1200),
    ("Christopher has 64 * $0.25 = $16.00 and Karen has $8.00, so he has $8.00 more.", 8),
    ("The total cost is $1,234.50.", 1234.5),
    ("He gets 64*.25 = .25 of it", 0.25),
    ("The answer is 18 dollars.\n#### 18\nThis is because 9 * 2 = 18 and 3 more is 21", 18),
    ("The difference is 10 - 3", 3),
    ("x = -5", -5),
    ("Numbers 2,3 and 4", 4),
    ("**Answer:** 42%", 42),
    ("I cannot determine the answer.", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_is_correct():
    assert is_correct(16.0, 16)
    assert is_correct(1e6 + 1e-4, 1e6)
    assert not is_correct(15.0, 16)
    assert not is_correct(None, 16)


def test_load_questions_seeded_shuffle():
    first = load_questions(DEFAULT_DATA, 3)
    assert [q["index"] for q in first] == [0, 1, 2] and first[0]["gold"] == 27
    a, b = load_questions(DEFAULT_DATA, 5, seed=1), load_questions(DEFAULT_DATA, 5, seed=1)
    assert a == b and [q["index"] for q in a] != [0, 1, 2, 3, 4]
    assert len(load_questions(DEFAULT_DATA, 100)) == 24


# -- cost model -------------------------------------------------------------------------


def test_steps_per_cycle_known_values():
    assert steps_per_cycle(0.5, 4) == pytest.approx(1.9375)
    assert steps_per_cycle(0.0, 4) == 1.0
    assert steps_per_cycle(1.0, 4) == 5.0
    assert steps_per_cycle(0.9999999, 3) == pytest.approx(4.0, rel=1e-5)
    with pytest.raises(ValueError):
        steps_per_cycle(1.5, 2)


def test_predicted_speedup():
    # E / (g*c + r): the GPU-like case (batch free) vs the 2-core CPU case (docs/cost-model.md)
    assert predicted_speedup(0.5, 4, c=0.2, r=1.0) == pytest.approx(1.9375 / 1.8)
    assert predicted_speedup(0.5, 4, c=0.39, r=2.96) == pytest.approx(1.9375 / (4 * 0.39 + 2.96))
    assert predicted_speedup(0.5, 4, c=0.2, r=1.0, base_speedup=1.5) == pytest.approx(1.5 * 1.9375 / 1.8)


def _totals(**kw) -> dict:
    base = dict(draft_s=0.0, target_s=0.0, verify_s=0.0, wall_s=0.0, cycles=0, drafted_steps=0, verified_steps=0,
                accepted_steps=0, target_steps=0, target_tokens=0, steps=0, draft_tokens_generated=0)
    return {**base, **kw}


def test_lr_inputs_measures_c_from_step_times():
    ar = _totals(target_s=20.0, target_steps=10, target_tokens=400, wall_s=20.0, cycles=10, steps=10)
    # 4 cycles, 16 drafted positions at 0.5 s (c = 0.5 / 2.0 = 0.25), b = 8/16
    lr = _totals(draft_s=8.0, target_s=16.0, verify_s=0.4, wall_s=24.8, cycles=4, drafted_steps=16,
                 verified_steps=16, accepted_steps=8, steps=12, draft_tokens_generated=640)
    out = lr_inputs(lr, ar, ar, g=4, width=1, r=2.0, calib_t1_base=None, calib_t1_ar=None)
    assert out["b"] == 0.5 and out["c"] == 0.25 and out["E"] == 1.9375
    assert out["t1_base_s"] == 2.0 and out["t1_base_source"] == "run" and out["base_speedup"] == 1.0
    assert out["predicted_speedup"] == pytest.approx(1.9375 / 3.0, abs=1e-4)
    assert out["c_per_token"] == pytest.approx((8.0 / 640) / (20.0 / 400))
    obs = out["observed"]
    assert obs["steps_per_cycle"] == 3.0 and obs["target_per_cycle"] == 2.0 and obs["draft_per_cycle"] == 1.0
    assert obs["other_per_cycle"] == pytest.approx(0.05)


def test_lr_inputs_width_and_calibration_fallback():
    lr = _totals(draft_s=8.0, target_s=16.0, wall_s=24.0, cycles=4, drafted_steps=32, verified_steps=16,
                 accepted_steps=0, steps=4)
    # W = 2: 32 drafted steps are 16 draft calls of 0.5 s; no base run: T1 from the calibration
    out = lr_inputs(lr, None, None, g=4, width=2, r=None, calib_t1_base=1.0, calib_t1_ar=2.0)
    assert out["c"] == 0.5 and out["t1_base_source"] == "calibration" and out["base_speedup"] == 2.0
    assert out["predicted_speedup"] is None  # no r measured


# -- modes, summaries, sweep ------------------------------------------------------------


def test_budgets():
    assert ModeSpec("sd", sd_tokens=3).budget == 3
    assert ModeSpec("lr", lr=True, depth=3).budget == 3
    assert ModeSpec("x", lr=True, depth=2, sd_tokens=1, width=2).budget == 5
    assert [s.mode.name for s in main_specs(["ar", "sd", "lr", "lr+sd"], 4, 1, 4)] == ["ar", "sd", "lr", "lr+sd"]
    with pytest.raises(ValueError):
        main_specs(["ar", "bogus"], 4, 1, 4)


def test_sweep_specs_are_bounded_and_complete():
    specs = sweep_specs([1, 2, 3], [1, 2], [1, 2], [0, 1], sd_tokens=4)
    names = {s.name for s in specs}
    assert len(specs) == len(names) <= 20
    for s in specs:
        if s.base:
            assert s.base in names  # every lr config has its base target's run
        if s.lr and s.sd_tokens <= 1 and s.depth <= 2:
            assert f"sd K={s.budget}" in names  # the equal-budget opponent
    assert {"sd K=1", "sd K=2", "sd K=3", "lr+sd g=3 W=1 K=4"} <= names


def _record(mode, q, latency, correct=True, text="x", depth_v=(), depth_a=(), **stats):
    st = dict(draft_s=0.0, target_s=latency, verify_s=0.0, wall_s=latency, cycles=5, drafted_steps=0,
              verified_steps=sum(depth_v), accepted_steps=sum(depth_a), target_steps=5, target_tokens=100,
              verified_by_depth=list(depth_v), accepted_by_depth=list(depth_a))
    st.update(stats)
    return {"question": q, "mode": mode, "order": 0, "latency_s": latency, "tokens": 100, "steps": 5,
            "finish_reason": "stop", "gold": 1.0, "predicted": 1.0 if correct else 2.0, "correct": correct,
            "text": text, "stats": st, "target_meter": {}, "draft_meter": {"tokens": 50} if mode.startswith("lr") else None}


def synthetic_records() -> list[dict]:
    recs = []
    for q, lat in enumerate((10.0, 20.0, 30.0)):
        recs.append(_record("ar", q, lat))
        recs.append(_record("sd", q, lat * 0.8))
        recs.append(_record("lr", q, lat / 1.25, correct=q != 2, text="y", depth_v=(4, 2, 1), depth_a=(2, 1, 0),
                            draft_s=lat * 0.2, target_s=lat * 0.5, verify_s=lat * 0.05, wall_s=lat * 0.8,
                            cycles=4, drafted_steps=12, target_steps=3))
        recs.append(_record("lr+sd", q, lat / 1.5, depth_v=(4, 2), depth_a=(3, 1), draft_s=lat * 0.2,
                            target_s=lat * 0.3, wall_s=lat / 1.5, cycles=4, drafted_steps=12, target_steps=3))
    return recs


def synthetic_calibration() -> Calibration:
    cal = Calibration(Prompt(text="q"), tokens=24)
    cal.engines = {"target": {"tokens": 24, "batch": {1: 2.0, 5: 3.0}},
                   "target+ngram": {"tokens": 24, "batch": {1: 1.8, 5: 6.0}},
                   "draft": {"tokens": 20, "batch": {1: 0.5}}}
    return cal


def test_percentile():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
    assert percentile([], 50) == 0.0


def test_summarize():
    specs = main_specs(["ar", "sd", "lr", "lr+sd"], 4, 1, 4)
    s = summarize(synthetic_records(), specs, synthetic_calibration(), "sync")
    assert s["ar"]["latency"] == {"mean_s": 20.0, "p50_s": 20.0, "p90_s": 28.0}
    assert s["lr"]["speedup_vs_ar"] == 1.25 and s["lr+sd"]["speedup_vs_ar"] == 1.5
    assert s["lr"]["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["lr"]["acceptance"]["by_depth"] == [0.5, 0.5, 0.0] and s["lr"]["acceptance"]["rate"] == pytest.approx(3 / 7, abs=1e-4)
    assert s["sd"]["same_text_as_ar"] == 1.0 and s["lr"]["same_text_as_ar"] == 0.0
    assert s["ar"]["cost_model"] is None
    cm = s["lr"]["cost_model"]
    assert cm["r"] == 1.5 and cm["predicted_speedup"] is not None and cm["realized_speedup"] == 1.25
    assert s["lr"]["time"]["orchestration_s"] == pytest.approx(0.05 * 60, abs=1e-3)
    assert s["lr+sd"]["cost_model"]["r"] == pytest.approx(6.0 / 1.8, abs=1e-3)


def test_summarize_depth_auto():
    """Under depth auto the cost model is evaluated at every g the policy may choose (the best is
    reported) and the chosen depths are summed over questions."""
    specs = main_specs(["ar", "lr"], "auto", 1, 4)
    assert specs[1].depths == list(range(1, 7)) and specs[1].max_batch == 7
    cal = synthetic_calibration()
    cal.engines["target"]["batch"] = {1: 2.0, 2: 2.2, 3: 2.6, 4: 3.2, 5: 4.0, 6: 5.0, 7: 6.0}
    recs = [r for r in synthetic_records() if r["mode"] in ("ar", "lr")]
    for r in recs:
        if r["mode"] == "lr":
            r["stats"].update(depth_counts=[2, 1, 1], probes=1)
    cm = summarize(recs, specs, cal, "sync")["lr"]
    by_g = cm["cost_model"]["predicted_by_g"]
    assert set(by_g) == set(range(1, 7)) and cm["cost_model"]["g"] == "auto"
    best = cm["cost_model"]["best_g"]
    assert by_g[best] == max(by_g.values()) == cm["cost_model"]["predicted_speedup"]
    assert cm["depths_chosen"] == {"cycles_by_depth": [6, 3, 3], "probes": 3}


def test_depth_auto_cost_model_is_on_the_policys_estimate():
    """One accepted verdict in the whole run makes b = 1.0: the raw rate predicts a gain, the
    policy's estimate (a posterior mean under a shared prior) does not, and the report's
    prediction is the policy's."""
    specs = main_specs(["ar", "lr"], "auto", 1, 4)
    cal = synthetic_calibration()
    cal.engines["target"]["batch"] = {n: 2.0 + 0.2 * (n - 1) for n in range(1, 8)}  # r(n) = 1 + 0.1 (n - 1)
    recs = []
    for q in range(3):
        recs.append(_record("ar", q, 20.0))
        one = (1,) if q == 0 else (0,)
        recs.append(_record("lr", q, 20.4, depth_v=one, depth_a=one, draft_s=3.2, target_s=10.0,
                            cycles=5, drafted_steps=1, target_steps=5))
    cm = summarize(recs, specs, cal, "sync")["lr"]["cost_model"]
    assert cm["c"] == pytest.approx(0.8)  # the measured 0.5B -> 1.5B pair's
    assert cm["b"] == 1.0 and 0.75 < cm["b_policy"] < 0.9  # one verdict: the shared prior's pull
    assert max(cm["predicted_point_by_g"].values()) > 1.03  # what b = 1.0 alone would promise
    assert cm["predicted_speedup"] == max(cm["predicted_by_g"].values()) < 1.0
    assert cm["E"] < 1 + cm["best_g"]


def synthetic_result(with_sweep: bool = True) -> dict:
    specs = main_specs(["ar", "sd", "lr", "lr+sd"], 4, 1, 4)
    cal = synthetic_calibration()
    result = {"config": {"engine": "hf", "target": "t", "draft": "d", "verifier": "embedding", "depth": 4,
                         "width": 1, "sd_tokens": 4, "schedule": "sync", "max_tokens": 192, "temperature": 0.0,
                         "data": str(DEFAULT_DATA)},
              "environment": {"date": "2026-11-23", "cpus_available": 2, "torch": "2.13.0+cpu"},
              "n_questions": 3, "records": synthetic_records(),
              "summary": summarize(synthetic_records(), specs, cal, "sync"), "calibration": cal.to_dict()}
    if with_sweep:
        sspecs = sweep_specs([1, 2], [1], [1, 2], [0, 1], sd_tokens=4)
        recs = []
        for q in range(2):
            for i, s in enumerate(sspecs):
                lat = 10.0 / (1 + 0.1 * i)
                kw = dict(depth_v=(2, 1), depth_a=(1, 0), draft_s=1.0, drafted_steps=4, cycles=2) if s.lr else {}
                recs.append(_record(s.name, q, lat, **kw))
        summary = summarize(recs, sspecs, cal, "sync")
        result["sweep"] = {"n_questions": 2, "max_tokens": 96, **sweep_result(summary, sspecs, [1, 2], 4),
                           "summary": summary}
    return result


def test_sweep_result():
    sweep = synthetic_result()["sweep"]
    assert sweep["figure1"]["x"] == [1, 2] and len(sweep["figure1"]["lr+sd"]) == 2
    assert all(y is not None for y in sweep["figure1"]["sd"] + sweep["figure1"]["lr+sd"])
    budgets = {e["budget"]: e for e in sweep["equal_budget"]}
    assert budgets[3]["sd_speedup"] is not None and budgets[3]["winner"] is not None
    assert budgets[1]["best_lr"] in ("lr g=1 W=1", "lr g=1 W=2")


def test_report_writer(tmp_path):
    paths = write_report(synthetic_result(), tmp_path)
    names = {p.name for p in paths}
    assert names == {"bench.json", "bench.md", "acceptance_by_depth.png", "sweep_depth.png", "sweep_budget.png"}
    for p in paths:
        assert p.exists() and p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "bench.md").read_text()
    assert "| mode | accuracy |" in md and "| lr+sd |" in md and "Speculation budget" in md
    assert "![sweep_budget](sweep_budget.png)" in md
    assert json.loads((tmp_path / "bench.json").read_text())["summary"]["lr"]["speedup_vs_ar"] == 1.25


def test_report_without_lr_or_sweep(tmp_path):
    result = synthetic_result(with_sweep=False)
    result["summary"] = {"ar": result["summary"]["ar"]}
    names = {p.name for p in write_report(result, tmp_path)}
    assert names == {"bench.json", "bench.md"}


class _Clock:
    def __init__(self):
        self.now = 100.0

    def perf_counter(self):
        return self.now


async def test_calibration_times_batches(monkeypatch):
    import benchmarks.bench.calibrate as calib_mod
    from orchestrator.types import Step

    clock = _Clock()
    monkeypatch.setattr(calib_mod.time, "perf_counter", clock.perf_counter)

    class FakeEngine:
        calls = []

        async def generate_steps(self, reqs):
            self.calls.append(len(reqs))
            clock.now += 1.0 + 0.5 * (len(reqs) - 1)  # batch n costs 1 + (n - 1) / 2 step times
            return [Step("a b c", [1, 2, 3], "k", "step_limit") for _ in reqs]

    cal = Calibration(Prompt(text="q"), tokens=3, reps=2)
    engine = FakeEngine()
    await cal.measure("target", engine, [5])
    assert engine.calls == [1, 1, 5, 1, 5]  # warm-up, then sizes interleaved per round
    assert cal.t1("target") == 1.0 and cal.ratio("target", 5) == 3.0 and cal.per_token("target") == pytest.approx(1 / 3)
    await cal.measure("target", engine, [3, 5])  # only the new size is timed
    assert engine.calls[5:] == [3, 3] and cal.ratio("target", 3) == 2.0
    assert cal.ratio("target", 9) is None and cal.t1("draft") is None
    assert cal.to_dict()["engines"]["target"]["ratio"] == {"1": 1.0, "3": 2.0, "5": 3.0}
    assert cal.to_dict()["noisy"] == []
    cal.engines["target"]["batch"][5] = 0.5
    assert cal.noisy("target") and cal.to_dict()["noisy"] == ["target"]


def test_estimate():
    from benchmarks.bench.run import estimate_s

    cal = synthetic_calibration()  # target: 2.0 s per 24 tokens, batch 5 = 1.5x; draft 0.025 s/token
    ar, lr = main_specs(["ar", "lr"], 4, 1, 4)
    assert estimate_s([ar], cal, 2, 48, 0.5) == pytest.approx(2 * 48 * 2.0 / 24)
    per_tok = 2.0 / 24
    factor = (4 * 0.025 / per_tok + 1.5) / 1.0  # acceptance 0: one step per cycle
    assert estimate_s([lr], cal, 1, 48, 0.0) == pytest.approx(48 * per_tok * factor)


async def test_runner_interleaves_rotates_and_respects_the_deadline(monkeypatch):
    import benchmarks.bench.runner as runner_mod
    from benchmarks.bench.runner import Runner

    clock = _Clock()
    monkeypatch.setattr(runner_mod.time, "perf_counter", clock.perf_counter)
    runner = Runner(argparse.Namespace(quiet=True), pool=None)

    async def fake_run_one(spec, row, order):
        clock.now += 10.0  # every run takes 10 s: 30 s per question of 3 modes
        return {"mode": spec.name, "question": row["index"], "order": order}

    runner.run_one = fake_run_one
    specs = main_specs(["ar", "lr", "lr+sd"], 2, 1, 2)
    rows = [{"index": i} for i in range(5)]
    recs = await runner.run_all(specs, rows, "t")
    assert [r["mode"] for r in recs[:6]] == ["ar", "lr", "lr+sd", "lr", "lr+sd", "ar"]
    assert runner.skipped == []
    clock.now = 100.0
    recs = await runner.run_all(specs, rows, "t", deadline=100.0 + 75.0)  # room for 2 questions, not 3
    assert len(recs) == 6 and runner.skipped == [2, 3, 4]


# -- CLI ----------------------------------------------------------------------------------


def test_cli_registration_and_defaults():
    from deployments.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["bench", "run"])
    assert (args.limit, args.max_tokens, args.verifier, args.modes) == (3, 128, "embedding", "ar,sd,lr,lr+sd")
    assert (args.engine, args.sd_tokens, args.width, args.schedule) == ("hf", 4, 1, "sync")  # the config's
    assert args.target == "qwen2.5-0.5b" and args.draft == "smollm2-135m" and callable(args.func)
    args = parser.parse_args(["bench", "run", "--schedule", "async", "--sweep-widths", "1,3", "--verifier", "exact"])
    assert args.schedule == "async" and args.sweep_widths == [1, 3] and args.verifier == "exact"
    assert parser.parse_args(["bench", "run", "--async"]).schedule == "async"
    # the other benchmarks get their arguments as given
    args = parser.parse_args(["bench", "gpu", "--device", "cpu", "--smoke", "--help"])
    assert args.argv == ["--device", "cpu", "--smoke", "--help"]


def test_bench_pins_each_roles_cores_as_asked():
    """--target-cores / --draft-cores reach the engine configs of every mode the bench builds (the
    cpu-split topology), not only `lookahead generate`'s."""
    from benchmarks.bench.runner import Runner
    from deployments.cli.main import build_parser

    args = build_parser().parse_args(["bench", "run", "--engine", "vllm", "--target-cores", "1", "--draft-cores", "0"])
    runner = Runner(args, pool=None)
    for spec in main_specs(["ar", "sd", "lr", "lr+sd"], 2, 1, 4):
        cfg = runner.app_config(spec)
        assert cfg.target.engine.cpu_cores == "1", spec.name
        assert cfg.draft is None or cfg.draft.engine.cpu_cores == "0", spec.name
    assert runner.app_config(ModeSpec("lr", lr=True, depth=2)).draft.engine.cpu_cores == "0"


def test_bench_loads_a_plain_target_for_the_verifier_only_when_the_verifier_calls_it():
    """An sd-only run with a verifier that calls no engine loads no second copy of the target
    (two 1.5B targets and a draft do not fit in this machine's memory); target-score gets the
    plain target, loaded once."""
    from benchmarks.bench.runner import Runner
    from deployments.cli.main import build_parser

    class Pool:  # records what the runner asks to load; the verifiers under test call nothing
        def __init__(self):
            self.loaded = []

        def get(self, cfg):
            self.loaded.append(cfg)
            return object()

    for kind, loads in (("exact", 0), ("target-score", 1)):
        args = build_parser().parse_args(["bench", "run", "--modes", "lr+sd", "--verifier", kind])
        pool = Pool()
        runner = Runner(args, pool)
        cfg = runner.app_config(ModeSpec("lr+sd", lr=True, sd_tokens=4, depth=2))
        runner.verifier(cfg)
        runner.verifier(cfg)
        assert len(pool.loaded) == loads, kind
        assert all(c.token_speculation == "none" for c in pool.loaded), kind


def test_skip_starts_after_the_first_questions(tmp_path):
    from benchmarks.bench.run import question_rows
    from deployments.cli.main import build_parser, main

    parser = build_parser()
    whole = question_rows(parser.parse_args(["bench", "run", "--limit", "5"]), False)[1]
    rows, main_rows, _ = question_rows(parser.parse_args(["bench", "run", "--skip", "2", "--limit", "3"]), False)
    assert [r["index"] for r in main_rows] == [r["index"] for r in whole[2:5]]
    assert rows[0] == whole[0]  # calibration still times the first question
    with pytest.raises(ValueError, match="--skip -1"):
        question_rows(parser.parse_args(["bench", "run", "--skip", "-1"]), False)
    # past the end of the file: refused before any engine loads
    assert main(["bench", "run", "--skip", "100000", "--out", str(tmp_path)]) == 2


def test_import_is_cheap():
    code = "import sys, benchmarks.bench.run; print(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the real thing -------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_end_to_end(tmp_path):
    from deployments.cli.main import main

    rc = main(["bench", "run", "--limit", "1", "--max-tokens", "24", "--modes", "ar,lr", "--out", str(tmp_path), "--quiet",
               "--calib-tokens", "8"])
    assert rc == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert set(result["summary"]) == {"ar", "lr"}
    for name in ("ar", "lr"):
        m = result["summary"][name]
        assert 0.0 <= m["accuracy"] <= 1.0
        assert m["latency"]["mean_s"] > 0 and m["latency"]["p90_s"] >= m["latency"]["p50_s"] > 0
        assert m["speedup_vs_ar"] > 0 and m["tokens_per_s"] > 0
    assert result["summary"]["ar"]["speedup_vs_ar"] == 1.0
    lr = result["summary"]["lr"]
    assert lr["acceptance"]["verified"] > 0 and lr["acceptance"]["rate"] is not None
    assert lr["cost_model"]["predicted_speedup"] > 0 and lr["cost_model"]["c"] > 0
    assert set(lr["time"]) >= {"draft_s", "target_s", "verify_s", "orchestration_s", "wall_s"}
    assert len(result["records"]) == 2 and result["environment"]["torch"]
    assert (tmp_path / "bench.md").exists() and (tmp_path / "acceptance_by_depth.png").exists()
