"""`serve run <the generated YAML>` serves the same application as `lookahead serve`, and so
does `serve run` of what `serve build deployments.app:cpu_demo` writes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.support.paths import ROOT

pytestmark = [pytest.mark.serve, pytest.mark.slow]


@pytest.mark.parametrize("source", ["rendered", "serve build"])
def test_serve_run_cpu_demo_yaml(source, tmp_path):
    serve_bin = Path(sys.executable).with_name("serve")
    config = "deployments/configs/cpu-demo.yaml"
    if source == "serve build":
        config = str(tmp_path / "built.yaml")
        built = subprocess.run([str(serve_bin), "build", "deployments.app:cpu_demo", "-o", config], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, built.stderr[-3000:]
    # a short temp dir: Ray's unix socket paths must stay under 107 bytes
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-", dir="/tmp")}
    proc = subprocess.Popen([str(serve_bin), "run", config], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                if httpx.get("http://127.0.0.1:8000/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            pytest.fail("serve run did not come up in time")
        r = httpx.post("http://127.0.0.1:8000/v1/chat/completions", timeout=300, json={
            "model": "lookahead", "messages": [{"role": "user", "content": "What is 6 times 7?"}],
            "max_tokens": 12, "temperature": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert "42" in body["choices"][0]["message"]["content"]
        assert body["usage"]["lookahead"]["mode"] == "lr"
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGINT the whole `serve run` session (Ray included); SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass  # already gone
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
