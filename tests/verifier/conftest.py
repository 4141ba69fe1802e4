"""The verifiers' tests: the pre-check, the numeric and plan guards (unit), the embedding, judge
and rater on real models, and each profile's default verifier on the labelled step pairs
(tests/fixtures/step_pairs.jsonl). Scripted choice scorers come from tests/support/scorers.py;
the real models are loaded once per module that asks for them."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def embedder():
    """MiniLM-L6 at cosine 0.85: low enough that the blindness tests see it accept wrong numbers."""
    from deployments.model_cache import ModelNotAvailable, resolve_model
    from verifier.embedding import EmbeddingVerifier

    try:
        return EmbeddingVerifier(resolve_model("minilm-l6"), threshold=0.85)
    except ModelNotAvailable as exc:
        pytest.fail(str(exc))  # a missing model is a failure, never a skip


@pytest.fixture(scope="module")
def qwen():
    """The packaged Qwen2.5-0.5B on CPU, as judge and rater."""
    from deployments.config import EngineConfig
    from deployments.engines.hf import HFEngine
    from deployments.model_cache import ModelNotAvailable

    try:
        return HFEngine(EngineConfig(model="qwen2.5-0.5b", device="cpu"))
    except ModelNotAvailable as exc:
        pytest.fail(str(exc))  # a missing model is a failure, never a skip
