"""The verifier kinds and what each needs, declared once: the config, the OpenAI request model,
the Serve orchestrator, the pipeline, the Kubernetes manifests, the CLI and the demo ask here
instead of naming kinds. Standard library only, so the config and API layers may read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

VerifierKind = Literal["exact", "normalized", "embedding", "llm-judge", "target-score"]
VERIFIER_KINDS: tuple[str, ...] = get_args(VerifierKind)


@dataclass(frozen=True)
class KindNeeds:
    #: engine roles it calls (ChoiceScorer): "judge" (its own deployment) or "target" (always there)
    roles: tuple[str, ...] = ()
    #: models it loads itself, named by VerifierConfig fields (resolved to paths by the pipeline and
    #: passed to verifier.factory.build_verifier under the same names)
    models: tuple[str, ...] = ()
    #: default acceptance threshold; None: it has none (equality)
    threshold: float | None = None
    #: the lower bar for pairs whose steps compute and state the same results (the numeric guard agrees
    #: on every result, verifier/numeric.py): agreement on every number is strong evidence, so the inner
    #: score only has to reach this. Measured on the labelled step pairs
    #: (benchmarks/verifiers/verifier_eval.py --agreed, docs/verifiers.md); None: no lower bar
    agreed_threshold: float | None = None
    #: it rules on meaning, so the numeric and plan guards go in front of it
    semantic: bool = False


KINDS: dict[str, KindNeeds] = {
    "exact": KindNeeds(),
    "normalized": KindNeeds(),
    # MiniLM-L6 cosine (the reference: mpnet at 0.95). At 0.85, 0.5B drafting for 1.5B kept ar's final
    # answer on 23 of 30 GSM8K questions: each miss began at an accepted paraphrase scored 0.87-0.99,
    # after which greedy decoding took its own path. At 0.97: 28 of 30, acceptance 0.57 -> 0.38
    # (docs/verifiers.md, benchmarks/results/quality-0.5b-drafts-1.5b-embedding-0.97/).
    # Agreed bar: on the 243 labelled pairs, 62 pass both guards with the same results stated (a
    # result set up but not stated is no agreement: numeric.py rule 1): 61 equivalent (cosine
    # 0.547-0.999) and 1 wrong (0.760, "12 more" where the target computes 12 - 6 = 6). 0.80 keeps
    # a margin over it and accepts 13 of the 16 same-result paraphrases (docs/verifiers.md).
    "embedding": KindNeeds(models=("embedding_model",), threshold=0.97, agreed_threshold=0.80, semantic=True),
    "llm-judge": KindNeeds(roles=("judge",), threshold=0.5, semantic=True),  # P(yes)
    "target-score": KindNeeds(roles=("target",), threshold=7.0, semantic=True),  # expected 0-9 rating (SpecReason)
}
assert tuple(KINDS) == VERIFIER_KINDS, "one entry per verifier kind, in the order of VERIFIER_KINDS"

#: the guards in front of every semantic kind unless a configuration turns them off: measured on the
#: labelled step pairs (docs/verifiers.md), the embedding, the small judge and the target as rater
#: all accept wrong arithmetic and dropped-item plans without them
NUMERIC_GUARD = True
PLAN_GUARD = True


def needs(kind: str) -> KindNeeds:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown verifier kind {kind!r}; expected one of {', '.join(VERIFIER_KINDS)}") from None


def models_of(verifier_config) -> list[str]:
    """The models the configured kind loads itself (values of its VerifierConfig fields)."""
    return [getattr(verifier_config, field) for field in needs(verifier_config.kind).models]


def any_kind_models(verifier_config) -> list[str]:
    """Every model a request could make the verifier load (a request may pick any kind)."""
    return list(dict.fromkeys(getattr(verifier_config, f) for k in KINDS.values() for f in k.models))
