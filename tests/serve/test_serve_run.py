"""`serve build deployments.app:cpu_demo` writes the committed Serve YAML's application, and `serve run`
of what it wrote serves the same application as `lookahead serve`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.paths import ROOT
from tests.support.processes import alive, descendants, free_port
from tests.support.serving import wait_answering

pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.cli]


def on_free_ports(path: Path) -> str:
    """Move the YAML's HTTP and gRPC ports to free ones (nothing else changes), so the run cannot
    collide with another server on this machine; returns the HTTP base URL."""
    doc = yaml.safe_load(path.read_text())
    doc["http_options"]["port"], doc["grpc_options"]["port"] = free_port(), free_port()
    path.write_text(yaml.safe_dump(doc))
    return f"http://127.0.0.1:{doc['http_options']['port']}"


def test_serve_build_then_serve_run_cpu_demo(tmp_path):
    serve_bin = Path(sys.executable).with_name("serve")
    config = tmp_path / "built.yaml"
    built = subprocess.run([str(serve_bin), "build", "deployments.app:cpu_demo", "-o", str(config)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    # what serve build writes is the application the committed (rendered) YAML holds
    committed = yaml.safe_load((ROOT / "deployments/configs/cpu-demo.yaml").read_text())
    (app,) = yaml.safe_load(config.read_text())["applications"]
    (want,) = committed["applications"]
    # (the import path differs: the builder serve build was given, the rendered YAML's generic one;
    # numbers compare by value, 4 and 4.0 alike)
    assert json.loads(json.dumps(app["deployments"]), parse_int=float) == \
        json.loads(json.dumps(want["deployments"]), parse_int=float)
    assert app["import_path"] == "deployments.app:cpu_demo"
    base = on_free_ports(config)
    # a short temp dir: Ray's unix socket paths must stay under 107 bytes
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-", dir="/tmp")}
    proc = subprocess.Popen([str(serve_bin), "run", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_answering(f"{base}/v1/models", proc, proc.stdout.read, timeout=400, interval=2)
        r = httpx.post(f"{base}/v1/chat/completions", timeout=300, json={
            "model": "lookahead", "messages": [{"role": "user", "content": "What is 6 times 7?"}],
            "max_tokens": 12, "temperature": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert "42" in body["choices"][0]["message"]["content"]
        assert body["usage"]["lookahead"]["mode"] == "lr"
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGINT the whole `serve run` session (Ray included), then wait for every process it had
    started (Ray's replicas outlive `serve run` by a few seconds); SIGKILL what lingers."""
    started = [p.pid for p in descendants(proc.pid)]
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass  # already gone
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    deadline = time.monotonic() + 60
    while (left := [pid for pid in started if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

