"""Build a verifier by name: what configs, the CLI and the Serve app call."""
from __future__ import annotations

from orchestrator.modes import VERIFIER_KINDS
from orchestrator.protocols import ChoiceScorer, Verifier


#: per-kind default acceptance thresholds (exact / normalized have none)
DEFAULT_THRESHOLDS: dict[str, float | None] = {
    "exact": None,
    "normalized": None,
    # MiniLM-L6 cosine (the reference: mpnet at 0.95). At 0.85, 0.5B drafting for 1.5B kept ar's final
    # answer on 23 of 30 GSM8K questions: each miss began at an accepted paraphrase scored 0.87-0.99,
    # after which greedy decoding took its own path. At 0.97: 28 of 30, acceptance 0.57 -> 0.38
    # (docs/verifiers.md, benchmarks/results/quality-0.5b-drafts-1.5b-embedding-0.97/).
    "embedding": 0.97,
    "llm-judge": 0.5,  # P(yes)
    "target-score": 7.0,  # expected 0-9 rating (SpecReason)
}

#: per-kind thresholds for pairs whose steps compute and state the same results (the numeric guard
#: agrees on every result, verifier/numeric.py): agreement on every number is strong evidence, so
#: the inner score only has to reach this. Measured on the labelled pairs (benchmarks/verifier_eval.py
#: --agreed, docs/verifiers.md); None: no lower bar for that kind.
AGREED_THRESHOLDS: dict[str, float | None] = {
    "embedding": None,
    "llm-judge": None,
    "target-score": None,
}


def build_verifier(kind: str, *, threshold: float | None = None, numeric_guard: bool | None = None,
                   plan_guard: bool = False, embedding_model: str | None = None, judge: ChoiceScorer | None = None,
                   target: ChoiceScorer | None = None, device: str = "cpu",
                   agreed_threshold: float | None | str = "default") -> Verifier:
    """Make the verifier `kind` (one of VERIFIER_KINDS).

    `embedding_model` is the resolved path of the sentence-transformers model for "embedding".
    `numeric_guard` puts the numeric guard in front of a semantic kind (default: the embedding
    only, which is blind to arithmetic); `plan_guard` puts the plan guard (verifier/plan.py: a plan
    step that drops, adds or merges an item) in front of one (default: off). Every configuration
    turns both on for every semantic kind (VerifierConfig), because measured on the labelled
    pairs the embedding, the small judge and the rater all accept wrong arithmetic and
    dropped-item plans without them (benchmarks/verifier_eval.py, docs/verifiers.md). exact and
    normalized ignore both. `judge` is the ChoiceScorer for
    "llm-judge", `target` the one for "target-score". `agreed_threshold`: the bar for pairs the
    numeric guard finds computing the same results ("default": AGREED_THRESHOLDS; None: none).
    """
    if kind not in VERIFIER_KINDS:
        raise ValueError(f"unknown verifier kind {kind!r}; expected one of {', '.join(VERIFIER_KINDS)}")
    t = DEFAULT_THRESHOLDS[kind] if threshold is None else float(threshold)
    agreed = AGREED_THRESHOLDS.get(kind) if agreed_threshold == "default" else agreed_threshold
    if kind == "exact":
        from verifier.exact import ExactVerifier
        return ExactVerifier()
    if kind == "normalized":
        from verifier.exact import NormalizedVerifier
        return NormalizedVerifier()
    if kind == "embedding":
        from verifier.embedding import EmbeddingVerifier
        if not embedding_model:
            raise ValueError("verifier 'embedding' needs embedding_model (a resolved model path)")
        return _guarded(EmbeddingVerifier(embedding_model, threshold=t, device=device),
                        True if numeric_guard is None else numeric_guard, plan_guard, agreed)
    if kind == "llm-judge":
        if judge is None:
            raise ValueError("verifier 'llm-judge' needs a judge ChoiceScorer (judge=...)")
        from verifier.judge import LLMJudgeVerifier
        return _guarded(LLMJudgeVerifier(judge, threshold=t), bool(numeric_guard), plan_guard, agreed)
    # target-score
    if target is None:
        raise ValueError("verifier 'target-score' needs the target ChoiceScorer (target=...)")
    from verifier.target_score import TargetScoreVerifier
    return _guarded(TargetScoreVerifier(target, threshold=t), bool(numeric_guard), plan_guard, agreed)


def _guarded(inner: Verifier, numeric: bool, plan: bool, agreed: float | None = None) -> Verifier:
    if not (numeric or plan):
        return inner
    from verifier.numeric import GuardedVerifier
    return GuardedVerifier(inner, numeric=numeric, plan=plan, agreed_threshold=agreed)
