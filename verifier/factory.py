"""Build a verifier by name: what configs, the CLI and the Serve app call."""
from __future__ import annotations

from orchestrator.protocols import ChoiceScorer, Verifier
from verifier.kinds import KINDS, NUMERIC_GUARD, PLAN_GUARD, needs

#: per-kind default acceptance thresholds (exact / normalized have none), as verifier/kinds.py states them
DEFAULT_THRESHOLDS: dict[str, float | None] = {kind: k.threshold for kind, k in KINDS.items()}


#: per-kind bars for pairs the numeric guard finds computing the same results, as verifier/kinds.py states them
AGREED_THRESHOLDS: dict[str, float | None] = {kind: k.agreed_threshold for kind, k in KINDS.items()}


def build_verifier(kind: str, *, threshold: float | None = None, numeric_guard: bool = NUMERIC_GUARD,
                   plan_guard: bool = PLAN_GUARD, embedding_model: str | None = None, judge: ChoiceScorer | None = None,
                   target: ChoiceScorer | None = None, device: str = "cpu",
                   agreed_threshold: float | None | str = "default") -> Verifier:
    """Make the verifier `kind` (one of VERIFIER_KINDS; what each needs: verifier/kinds.py).

    `embedding_model` is the resolved path of the sentence-transformers model for "embedding";
    `judge` the ChoiceScorer for "llm-judge", `target` the one for "target-score". The numeric
    and plan guards go in front of a semantic kind unless turned off (verifier/kinds.py says
    why they are on by default); exact and normalized ignore both. `agreed_threshold`: the bar
    for pairs the numeric guard finds computing the same results ("default": AGREED_THRESHOLDS;
    None: none).
    """
    t = needs(kind).threshold if threshold is None else float(threshold)
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
        return _guarded(EmbeddingVerifier(embedding_model, threshold=t, device=device), numeric_guard, plan_guard, agreed)
    if kind == "llm-judge":
        if judge is None:
            raise ValueError("verifier 'llm-judge' needs a judge ChoiceScorer (judge=...)")
        from verifier.judge import LLMJudgeVerifier
        return _guarded(LLMJudgeVerifier(judge, threshold=t), numeric_guard, plan_guard, agreed)
    # target-score
    if target is None:
        raise ValueError("verifier 'target-score' needs the target ChoiceScorer (target=...)")
    from verifier.target_score import TargetScoreVerifier
    return _guarded(TargetScoreVerifier(target, threshold=t), numeric_guard, plan_guard, agreed)


def _guarded(inner: Verifier, numeric: bool, plan: bool, agreed: float | None = None) -> Verifier:
    if not (numeric or plan):
        return inner
    from verifier.numeric import GuardedVerifier
    return GuardedVerifier(inner, numeric=numeric, plan=plan, agreed_threshold=agreed)
