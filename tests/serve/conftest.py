"""Fixtures of the tests that run the real Ray Serve application."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def serve_app():
    """The real application on local Ray (CPU, fake GPUs), one per test module."""
    from tests.support.serve_app import start, stop, test_config

    handle, _ = start(test_config())
    yield handle
    stop()
