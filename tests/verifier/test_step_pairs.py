"""The labelled step pairs (tests/fixtures/step_pairs.jsonl) and each profile's default verifier.

The pairs come from real draft/target runs on GSM8K train questions (benchmarks/verifiers/collect_pairs.py),
plus hand-edited variants for the plan/list categories; each has a label and a one-line reason
(docs/verifiers.md says how they were labelled). Each profile's default verifier, built from its
VerifierConfig exactly as the application builds it, must keep its precision and its recall at
the floors set from the measurement (benchmarks/verifiers/verifier_eval.py), must accept no plan
step that drops an item, and must accept some of the same-result paraphrases. A verifier that
accepts nothing fails (no precision), as does one that accepts everything. The LLM judge runs on
the packaged Qwen2.5-0.5B on CPU (the GPU profiles' judge is larger).
"""
from __future__ import annotations

import pytest

from benchmarks.verifiers.verifier_eval import DROPPED, SAME_RESULT, build_bare, guarded_verdicts, load_pairs, score, verify_pairs
from deployments.profiles import PROFILES

PAIRS = load_pairs()
#: the quality run answers the first rows of the train file (`lookahead bench --data
#: .../train.jsonl --limit 30`); the labelled pairs come from rows far past them
QUALITY_ROWS = 1000
#: (precision, recall, recall on the same-result paraphrases) floors by the verifier's name, set
#: from the measurement in docs/verifiers.md (243 pairs) at or a little under what was measured,
#: so a change that lets more wrong steps through, or rejects more true ones, fails here. No
#: default may accept a wrong pair (precision 1); exact accepts the target's own tokens only.
FLOORS = {"exact": (1.0, 0.1, 0.0), "embedding+numeric+plan": (1.0, 0.72, 0.75),
          "llm-judge+numeric+plan": (1.0, 0.4, 0.6)}
#: the categories the set must cover with at least 10 pairs each
REQUIRED = {"substitution", "sign", "fraction", "word-number", "money", "unit", "comparative", "final-answer",
            DROPPED, SAME_RESULT}
#: every category the set keeps
CATEGORIES = REQUIRED | {"identical", "paraphrase", "opening", "changed-number", "reordered", "plan-added-item",
                         "plan-merged-item", "different-content", "stop-mismatch"}


def test_the_labelled_set():
    assert len(PAIRS) >= 100
    real = [p for p in PAIRS if p["origin"] == "real"]
    assert len(real) >= 100
    assert len({p["id"] for p in PAIRS}) == len(PAIRS)
    assert CATEGORIES <= {p["category"] for p in PAIRS}
    for cat in REQUIRED:
        assert sum(p["category"] == cat for p in PAIRS) >= 10, cat
    assert all(p["label"] for p in PAIRS if p["category"] == SAME_RESULT)
    for p in PAIRS:
        assert isinstance(p["label"], bool), p["id"]
        assert p["reason"].strip() and "\n" not in p["reason"], p["id"]
        assert p["origin"] in ("real", "edited"), p["id"]
        if p["origin"] == "edited":
            assert p["edit"].strip() and p["edited_from"], p["id"]  # what was changed, and from which pair
        assert p["question_index"] >= QUALITY_ROWS, p["id"]
        assert p["target_model"] == "qwen2.5-0.5b"
    # both labels, in real numbers
    assert 0.25 < sum(p["label"] for p in PAIRS) / len(PAIRS) < 0.75


def _configs():
    """Each distinct default VerifierConfig of the profiles, with the profiles that use it; the
    ones that run a judge or rater model are marked slow (minutes on CPU)."""
    out: dict[str, tuple] = {}
    for name, cfg in PROFILES.items():
        key = cfg.verifier.model_dump_json()
        out[key] = (cfg.verifier, out.get(key, (None, []))[1] + [name])
    return [pytest.param(v, names, id="+".join(names),
                         marks=[pytest.mark.slow] if v.kind in ("llm-judge", "target-score") else [])
            for v, names in out.values()]


@pytest.fixture(scope="module")
def scorer():
    """The packaged Qwen2.5-0.5B, judge and rater on CPU; built only when a test asks for it."""
    from deployments.config import EngineConfig
    from deployments.engines.hf import HFEngine

    return HFEngine(EngineConfig(model="qwen2.5-0.5b", device="cpu"))


@pytest.mark.parametrize("verifier_cfg, profiles", _configs())
async def test_profile_default_verifier_precision_and_recall(verifier_cfg, profiles, request):
    from deployments.pipeline import build_verifier

    needs_model = verifier_cfg.kind in ("llm-judge", "target-score")
    model = request.getfixturevalue("scorer") if needs_model else None
    verifier = build_verifier(verifier_cfg, target=model, judge=model)
    pairs = verify_pairs(PAIRS)
    verdicts = []
    for i in range(0, len(pairs), 8):
        verdicts += await verifier.verify(pairs[i:i + 8])
    m = score(PAIRS, verdicts)
    print(profiles, verifier.name, {k: v for k, v in m.items() if k not in ("by_category", "false_accept_ids")},
          {c: (r["false_accepts"], r["recall"]) for c, r in m["by_category"].items()})
    precision_floor, recall_floor, same_result_floor = FLOORS[verifier.name]
    assert m["dropped_plan_accepted"] == [], (profiles, m["dropped_plan_accepted"])
    assert m["precision"] is not None and m["precision"] >= precision_floor, (profiles, m["false_accept_ids"])
    assert m["recall"] >= recall_floor, (profiles, verifier.name, m["recall"])
    # lossless mode (exact) accepts the target's own tokens only: its floor there is 0
    assert m["by_category"][SAME_RESULT]["recall"] >= same_result_floor, (profiles, m["by_category"][SAME_RESULT])


async def test_guarded_variants_are_the_guarded_verifier():
    """verifier_eval derives guarded variants from the bare verdicts; that must be what
    GuardedVerifier rules when run for real (embedding: the real MiniLM, with its same-results
    threshold)."""
    from deployments.model_cache import resolve_model
    from verifier.factory import AGREED_THRESHOLDS, build_verifier

    pairs = verify_pairs(PAIRS)
    bare = await build_bare("embedding").verify(pairs)
    derived = guarded_verdicts(pairs, bare, numeric=True, plan=True, inner_name="embedding",
                               agreed_threshold=AGREED_THRESHOLDS["embedding"])
    real = await build_verifier("embedding", numeric_guard=True, plan_guard=True,
                                embedding_model=resolve_model("minilm-l6")).verify(pairs)
    assert [v.accepted for v in derived] == [v.accepted for v in real]
    assert [v.verifier for v in derived] == [v.verifier for v in real]
