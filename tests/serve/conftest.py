"""Fixtures of the tests that run the real Ray Serve application on the session's Serve instance."""
from __future__ import annotations

import pytest

from tests.support.serve_app import smol_config


@pytest.fixture(scope="module")
def smol_app(serve_cluster):
    """SmolLM2-135M drafting for itself (exact verifier, prompt lookup inside the target's steps):
    the application the API and speculation modules share."""
    return serve_cluster.use(smol_config())


@pytest.fixture(scope="module")
def smol_reference(engines):
    """Plain greedy decoding of SmolLM2 in this process (no step or token speculation): what every
    lossless request to `smol_app` must reproduce, token for token."""
    from tests.support.engines import hf_config
    from tests.support.references import greedy_reference

    return lambda messages, max_tokens: greedy_reference(engines, hf_config("smollm2-135m"), messages, max_tokens)
