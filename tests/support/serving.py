"""A server the test started as a subprocess (`lookahead serve`, `serve run`): wait until it answers."""
from __future__ import annotations

import subprocess
import time
from typing import Callable

import httpx
import pytest


def wait_answering(url: str, proc: subprocess.Popen, output: Callable[[], str], timeout: float,
                   interval: float = 1.0) -> None:
    """Poll `url` until it answers 200. Fails with the tail of the server's `output()` as soon as
    the server exits (a failed start is reported at once, not after `timeout`), or at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited with {proc.returncode}:\n{output()[-4000:]}"
        try:
            if httpx.get(url, timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet, or busy starting
        time.sleep(interval)
    pytest.fail(f"{url} did not answer 200 within {timeout:.0f} s")
