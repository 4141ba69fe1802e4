"""`lookahead bench` answer quality: same final answer as ar, accepted drafts a stricter check
would have rejected, verifiers compared in one run; and the optional 1.5B packages file."""
from __future__ import annotations


from benchmarks.bench.modes import main_specs
from benchmarks.bench.report import markdown
from benchmarks.bench.strict_check import RecordingVerifier, strict_review
from benchmarks.bench.summary import agreement_with_ar, strict_totals
from orchestrator.types import Prompt, Step, Verdict, VerifyPair
from verifier.exact import ExactVerifier
from tests.support.paths import ROOT

PROMPT = Prompt(messages=[{"role": "user", "content": "Natalia sold 48 clips in April and half as many in May. "
                                                      "How many in total?"}])


def step(text: str, source: str = "target") -> Step:
    return Step(text, [1], "k", "delimiter", source)


class AcceptAll:
    name = "lenient"

    async def verify(self, pairs):
        return [Verdict(True, 0.9, self.name) for _ in pairs]


async def test_strict_review_counts_what_equality_and_the_guard_reject():
    rec = RecordingVerifier(AcceptAll())
    may_t, may_d = step("In May she sold 48 / 2 = 24 clips.\n\n"), step("In May, she sold 48/2 = 24 clips.\n\n", "draft")
    tot_t, tot_d = step("In total 48 + 24 = 72 clips.\n\n"), step("In total 48 + 24 = 62 clips.\n\n", "draft")
    same = step("So the answer is 72.\n\n", "draft")
    await rec.verify([VerifyPair(PROMPT, [], may_d, may_t)])
    await rec.verify([VerifyPair(PROMPT, [may_d], tot_d, tot_t)])
    # a pair ruled on at position 2 whose draft was not the step used there is not counted
    await rec.verify([VerifyPair(PROMPT, [may_d, tot_d], step("Other.\n\n", "draft"), same)])
    await rec.verify([VerifyPair(PROMPT, [may_d, tot_d], same, same)])
    used = [may_d, tot_d, same, step("#### 72")]
    out = strict_review(used, rec.pairs)
    assert out["accepted_drafts"] == 3 and out["unmatched"] == 0
    assert out["not_equal"] == 2  # the paraphrase and the wrong sum; the identical step is equal
    assert out["guard_rejects"] == 1  # only the changed result
    assert out["examples"][0]["position"] == 1 and "62" in out["examples"][0]["draft"]
    rec.reset()
    assert rec.pairs == {} and rec.name == "lenient"


async def test_recording_keeps_the_inner_verdicts():
    rec = RecordingVerifier(ExactVerifier())
    a, b = step("x\n\n", "draft"), step("y\n\n")
    out = await rec.verify([VerifyPair(PROMPT, [], a, b), VerifyPair(PROMPT, [], a, step("x\n\n"))])
    assert [v.accepted for v in out] == [False, True]
    assert len(rec.pairs[0]) == 2
    # a rejected pair never matches an emitted draft
    assert strict_review([a], {0: rec.pairs[0][:1]})["unmatched"] == 1


def _rec(mode, q, predicted, text, strict=None):
    return {"mode": mode, "question": q, "predicted": predicted, "text": text, "strict": strict}


def test_agreement_with_ar_compares_final_numbers_not_text():
    ar = [_rec("ar", 0, 72.0, "... 72"), _rec("ar", 1, 5.0, "... 5"), _rec("ar", 2, None, "no number")]
    lr = [_rec("lr", 0, 72.0, "other words, 72"), _rec("lr", 1, 6.0, "... 6"), _rec("lr", 2, None, "no number")]
    out = agreement_with_ar(lr, ar)
    assert out["same_answer_as_ar"] == round(1 / 3, 4) and out["same_answer_count"] == 1
    assert out["same_text_as_ar"] == round(1 / 3, 4)  # only the numberless answer is the same text
    assert agreement_with_ar(lr, [])["same_answer_as_ar"] is None


def test_strict_totals_sum_over_questions():
    recs = [_rec("lr", 0, 1.0, "", {"accepted_drafts": 3, "not_equal": 2, "guard_rejects": 1, "unmatched": 0,
                                    "examples": [{"position": 1}]}),
            _rec("lr", 1, 1.0, "", {"accepted_drafts": 1, "not_equal": 0, "guard_rejects": 0, "unmatched": 0,
                                    "examples": []})]
    out = strict_totals(recs)
    assert (out["accepted_drafts"], out["not_equal"], out["guard_rejects"]) == (4, 2, 1)
    assert out["examples"] == [{"position": 1}]


def test_verifiers_option_makes_one_lr_configuration_per_verifier():
    specs = main_specs(["ar", "lr", "lr+sd"], 2, 1, 4, ["embedding", "llm-judge"])
    assert [s.name for s in specs] == ["ar", "lr[embedding]", "lr[llm-judge]", "lr+sd[embedding]", "lr+sd[llm-judge]"]
    assert [s.verifier for s in specs] == [None, "embedding", "llm-judge", "embedding", "llm-judge"]
    assert specs[3].base == "sd" and specs[1].depth == 2
    assert [s.name for s in main_specs(["ar", "lr"], 2, 1, 4)] == ["ar", "lr"]


def test_report_has_the_quality_table():
    mode = {"accuracy": 0.5, "latency": {"mean_s": 2.0, "p50_s": 2.0, "p90_s": 2.0}, "tokens_per_s": 10.0,
            "acceptance": {"rate": 0.4, "by_depth": [0.4]}, "speedup_vs_ar": 0.9, "same_text_as_ar": 0.5,
            "same_answer_as_ar": 1.0, "strict": {"accepted_drafts": 7, "not_equal": 5, "guard_rejects": 2}}
    ar = {**mode, "acceptance": {"rate": None, "by_depth": []}, "strict": None, "same_answer_as_ar": None}
    md = markdown({"summary": {"ar": ar, "lr[embedding]": mode}}, [])
    assert "## Answer quality" in md
    row = next(line for line in md.splitlines() if line.startswith("| lr[embedding] | 50% | 100% |"))
    assert row.split(" | ")[5:8] == ["7", "5", "2"]


def test_optional_1_5b_packages_file_matches_the_registry():
    from deployments.model_cache import REGISTRY

    path = ROOT / "deployments" / "model-packages-1.5b.txt"
    pins = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert pins == list(REGISTRY["qwen2.5-1.5b"].packages)


def _bench_json(tmp_path, config: dict, questions: list[dict], records: list[dict]) -> str:
    import json

    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"config": config, "questions": questions, "records": records}))
    return str(path)


def test_ar_from_reads_an_earlier_runs_ar_answers_and_refuses_other_settings(tmp_path):
    from argparse import Namespace

    import pytest

    from benchmarks.bench.ar_reference import load_ar_reference
    from benchmarks.bench.modes import ModeSpec
    from benchmarks.bench.summary import summarize

    cfg = {"target": "qwen2.5-1.5b", "engine": "vllm", "max_tokens": 384, "temperature": 0.0, "seed": None}
    args = Namespace(**cfg, dtype=None, top_p=None, top_k=None, system=None)
    rows = [{"index": 0, "question": "q0"}, {"index": 1, "question": "q1"}]
    questions = [{"index": 0, "question": "q0"}, {"index": 1, "question": "q1"}, {"index": 2, "question": "q2"}]
    ar = [_rec("ar", 0, 72.0, "72"), _rec("ar", 1, 5.0, "5"), _rec("ar", 2, 9.0, "9"), _rec("lr", 0, 1.0, "1")]
    path = _bench_json(tmp_path, cfg, questions, ar)
    ref = load_ar_reference(path, args, rows)
    assert [(r["mode"], r["question"]) for r in ref] == [("ar", 0), ("ar", 1)]  # this run's questions, ar only

    lr = [{**_rec("lr[embedding]", 0, 72.0, "other words, 72"), "correct": True, "latency_s": 3.0, "tokens": 5,
           "steps": 2, "stats": {k: 0 for k in ("draft_s", "target_s", "verify_s", "wall_s", "cycles",
                                                "drafted_steps", "verified_steps", "accepted_steps",
                                                "target_steps", "target_tokens")}
           | {"verified_by_depth": [], "accepted_by_depth": []}, "draft_meter": None, "target_meter": None}]
    spec = ModeSpec("lr[embedding]", lr=True, depth=1, width=1, base="ar", verifier="embedding")
    m = summarize(lr, [spec], None, "sync", ref)["lr[embedding]"]
    assert m["same_answer_as_ar"] == 1.0 and m["compared_with_ar"] == 1 and m["ar_from_earlier_run"]
    assert m["speedup_vs_ar"] is None  # speed is never compared across runs

    with pytest.raises(ValueError, match="max_tokens 384 there, 256 here"):
        load_ar_reference(path, Namespace(**{**vars(args), "max_tokens": 256}), rows)
    with pytest.raises(ValueError, match=r"file rows \[1\] hold other questions"):
        load_ar_reference(path, args, [{"index": 1, "question": "another q1"}])
    with pytest.raises(ValueError, match="no ar answer"):
        load_ar_reference(_bench_json(tmp_path, cfg, questions, ar[3:]), args, rows)
