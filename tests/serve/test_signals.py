"""Stopping `lookahead serve`, `lookahead demo` and `lookahead bench run` with a signal (deployments/cli/shutdown.py).

`lookahead serve` runs the cpu-vllm profile's shape (vLLM target with n-gram token speculation,
vLLM draft, each its own deployment) with SmolLM2-135M in both roles, the smallest models that
start in seconds; streaming clients are in flight when SIGTERM or SIGINT arrives. Short requests
finish within the grace period, a long one is ended with the shutdown error; the process exits 0,
nothing it started is left (raylet, GCS, Serve's actors, replicas, vLLM's EngineCore processes),
its ports are free, and its stderr holds no traceback and no failed Serve task. `lookahead demo` is
stopped while its engines start, `lookahead bench run` by SIGTERM while it runs (its EngineCore
processes end with it). A signal to `lookahead serve --address` deletes only its application:
tests/serve/test_multinode.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml

from deployments.cli.shutdown import Stopping, StopSignals
from deployments.profiles import PROFILES
from tests.support.engines import vllm_config
from tests.support.paths import ROOT
from tests.support.processes import alive, descendants, free_port, port_in_use
from tests.support.serving import wait_answering

pytestmark = [pytest.mark.serve, pytest.mark.vllm, pytest.mark.slow, pytest.mark.cli, pytest.mark.timeout(900)]

MODEL = "smollm2-135m"
GRACE_S = 6  # the --grace-period given: short requests finish in it, the long one cannot
#: after the grace period: the abort, deleting the application (the engines closing) and Ray's stop
TEARDOWN_S = 60
SHORT_TOKENS = 16
LONG_TOKENS = 1500  # a minute or more on this machine: still running when the grace period ends
#: a raw completion that greedy SmolLM2 continues to its token limit (a chat answer to "count to
#: 1000" stopped within the grace period)
COUNTING = ", ".join(str(i) for i in range(1, 21)) + ","
ALARMING = ("Traceback", "graceful_shutdown failed", "ERROR")


def vllm_yaml(path) -> str:
    """The cpu-vllm profile with SmolLM2-135M in both roles (vLLM engines, the test KV cache)."""
    cfg = PROFILES["cpu-vllm"].model_copy(deep=True)
    cfg.target.engine = vllm_config(MODEL, token_speculation="ngram", num_speculative_tokens=4)
    cfg.draft.engine = vllm_config(MODEL)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return str(path)


def lookahead(args: list[str], stderr_path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "deployments.cli.main", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=open(stderr_path, "w"), text=True,
                            start_new_session=True)


def wait_healthy(base: str, proc: subprocess.Popen, stderr_path, timeout: float = 600) -> None:
    wait_answering(f"{base}/health", proc, stderr_path.read_text, timeout)


class StreamingClient(threading.Thread):
    """One streamed chat completion: records what it received and how it ended."""

    def __init__(self, base: str, prompt: str, max_tokens: int, chat: bool = True) -> None:
        super().__init__(daemon=True)
        self.base, self.prompt, self.max_tokens, self.chat = base, prompt, max_tokens, chat
        self.started = threading.Event()  # the first content event arrived: the request is in flight
        self.finish_reason = None
        self.error: dict | None = None  # an error event in the stream
        self.done = False  # [DONE] arrived
        self.failure: str | None = None  # anything else: a cut connection, a bad status

    def run(self) -> None:
        body = {"model": "lookahead", "max_tokens": self.max_tokens, "temperature": 0, "stream": True,
                **({"messages": [{"role": "user", "content": self.prompt}]} if self.chat else {"prompt": self.prompt})}
        route = "chat/completions" if self.chat else "completions"
        try:
            with httpx.stream("POST", f"{self.base}/v1/{route}", json=body, timeout=300) as r:
                if r.status_code != 200:
                    self.failure = f"status {r.status_code}: {r.read()[:300]!r}"
                    return
                for line in r.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: "):]
                    if data == "[DONE]":
                        self.done = True
                        continue
                    event = json.loads(data)
                    if "error" in event:
                        self.error = event["error"]
                        continue
                    choice = event["choices"][0] if event.get("choices") else {}
                    if (choice.get("delta") or {}).get("content") or choice.get("text"):
                        self.started.set()
                    self.finish_reason = choice.get("finish_reason") or self.finish_reason
        except Exception as exc:  # noqa: BLE001 - recorded, asserted by the test
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.started.set()

    @property
    def completed(self) -> bool:
        return self.done and self.error is None and self.finish_reason in ("stop", "length")

    @property
    def shut_down(self) -> bool:
        """Ended cleanly by the stop: the shutdown error event, then [DONE]."""
        return self.done and (self.error or {}).get("code") == "shutting_down"

    def __str__(self) -> str:
        return (f"max_tokens={self.max_tokens} finish={self.finish_reason} done={self.done} error={self.error} "
                f"failure={self.failure}")


def tree(pid: int) -> dict[int, str]:
    return {p.pid: p.cmdline for p in descendants(pid)}


def left_of(started: dict[int, str], timeout: float = 30) -> dict[int, str]:
    """Of the processes `started`, those still running after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := {pid: cmd for pid, cmd in started.items() if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def kill_all(proc: subprocess.Popen, started: dict[int, str]) -> None:
    """On a failure: nothing outlives the test (the process group, then every process seen)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def assert_quiet(stderr: str) -> None:
    found = [w for w in ALARMING if w in stderr]
    assert not found, f"stderr says {found}:\n{stderr[-4000:]}"


@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_handles_sigterm_and_sigint_alike(first):
    # the handler is called as the interpreter would call it: a real SIGTERM to this process is the
    # suite's own stop (tests/support/processes.py watches for it)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop = StopSignals().install()
        assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) == stop._handle
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    with pytest.raises(Stopping):
        stop._handle(first, None)
    assert stop.signum == first and stop.exit_code == 128 + first and not stop.hurry.is_set()
    stop._handle(signal.SIGINT if first == signal.SIGTERM else signal.SIGTERM, None)
    assert stop.hurry.is_set() and stop.signum == first  # a second signal cuts the grace period short


# SIGTERM only: `lookahead serve` installs one handler for SIGTERM and SIGINT
# (deployments/cli/shutdown.py, asserted above), so the same drain under load would run twice;
# SIGINT's own path is run by the demo test below
@pytest.mark.parametrize("sig", [signal.SIGTERM], ids=["SIGTERM"])
def test_serve_stops_on_a_signal_under_load(sig, tmp_path):
    http, grpc = free_port(), free_port()
    base = f"http://127.0.0.1:{http}"
    err = tmp_path / "stderr.txt"
    proc = lookahead(["serve", "--config", vllm_yaml(tmp_path / "app.yaml"), "--host", "127.0.0.1",
                      "--port", str(http), "--grpc-port", str(grpc), "--grace-period", str(GRACE_S)], err)
    started: dict[int, str] = {}
    try:
        wait_healthy(base, proc, err)
        # /health answers once the target is ready; the draft's engine may still be loading (a
        # CI run sent the signal with one engine core up): the load starts once both are
        deadline = time.monotonic() + 180
        while sum("EngineCore" in cmd for cmd in tree(proc.pid).values()) < 2:
            assert time.monotonic() < deadline, f"expected the target's and the draft's engine cores: {tree(proc.pid)}"
            time.sleep(0.5)
        started = tree(proc.pid)
        short = [StreamingClient(base, f"What is {a} plus {a}?", SHORT_TOKENS) for a in (3, 5, 7)]
        long = StreamingClient(base, COUNTING, LONG_TOKENS, chat=False)
        clients = [*short, long]
        for c in clients:
            c.start()
        for c in clients:
            assert c.started.wait(180), f"no first chunk: {c}"
        started.update(tree(proc.pid))
        sent = time.monotonic()
        os.kill(proc.pid, sig)
        rc = proc.wait(timeout=GRACE_S + TEARDOWN_S)
        took = time.monotonic() - sent
        for c in clients:
            c.join(timeout=30)
        stderr = err.read_text()
        assert rc == 0, stderr[-4000:]
        print(f"\n{sig.name}: exited {rc} in {took:.1f}s; clients: " + "; ".join(map(str, clients)))
        for c in clients:
            assert not c.is_alive(), f"a client still waits: {c}"
            assert c.failure is None, f"{c}\n{stderr[-3000:]}"
            assert c.completed or c.shut_down, str(c)
        assert any(c.completed for c in short), "the grace period let no request in flight finish"
        assert long.shut_down, f"the request that outlived the grace period: {long}"
        left = left_of(started)
        assert not left, "left running:\n" + "\n".join(f"{p} {c[:160]}" for p, c in left.items())
        assert not [p for p in (http, grpc) if port_in_use(p)], "a port is still bound"
        assert "stopping" in stderr
        assert_quiet(stderr)
    finally:
        if proc.poll() is None or left_of(started, timeout=0):
            kill_all(proc, started)


def test_demo_stops_on_sigint_while_its_engines_start(tmp_path):
    err = tmp_path / "stderr.txt"
    proc = lookahead(["demo", "--forced-depth", "0", "--max-tokens", "64"], err)
    started: dict[int, str] = {}
    out: list[str] = []
    try:
        # SIGINT while the vLLM engines start (the costly part of a demo, and the stop that must not
        # orphan an EngineCore); stopping under load is the serve tests' claim
        reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 600
        while not [cmd for cmd in tree(proc.pid).values() if "EngineCore" in cmd]:
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, "the demo started no vLLM engine"
            time.sleep(0.5)
        time.sleep(3)  # the engine's model loading under way
        started = tree(proc.pid)
        os.kill(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=120)
        stderr = err.read_text()
        assert rc == 128 + signal.SIGINT, stderr[-3000:]
        assert not any(line.startswith("demo done") for line in out)
        assert "the demo stops before its end" in stderr
        left = left_of(started)
        assert not left, "left running:\n" + "\n".join(f"{p} {c[:160]}" for p, c in left.items())
        cfg = PROFILES["cpu-vllm"].server
        assert not [p for p in (cfg.http_port, cfg.grpc_port) if port_in_use(p)], "a port is still bound"
        assert_quiet(stderr)
    finally:
        if proc.poll() is None or left_of(started, timeout=0):
            kill_all(proc, started)


def test_bench_stops_on_sigterm_and_its_engines_end_with_it(tmp_path):
    """`lookahead bench run` on vLLM engines, SIGTERM in the middle of its run (as `kill` or a
    container's stop sends it): the engines are closed, so no EngineCore process outlives the
    command, which exits 143 with no traceback and writes no half report."""
    err = tmp_path / "stderr.txt"
    out_dir = tmp_path / "out"
    proc = lookahead(["bench", "run", "--engine", "vllm", "--target", MODEL, "--draft", MODEL, "--modes", "ar,lr",
                      "--verifier", "exact", "--data", str(ROOT / "tests" / "fixtures" / "gsm8k_small.jsonl"),
                      "--limit", "2", "--max-tokens", "400", "--calib-reps", "1", "--out", str(out_dir)], err)
    started: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 600
        while "main run:" not in err.read_text():  # engines loaded and calibrated: the run under way
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, "the bench never started its run"
            time.sleep(0.5)
        time.sleep(2)
        started = tree(proc.pid)
        assert [cmd for cmd in started.values() if "EngineCore" in cmd], started
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=120)
        stderr = err.read_text()
        assert rc == 128 + signal.SIGTERM, stderr[-3000:]
        assert "lookahead: stopped by SIGTERM" in stderr
        assert "Traceback" not in stderr, stderr[-4000:]
        left = left_of(started)
        assert not left, "left running:\n" + "\n".join(f"{p} {c[:160]}" for p, c in left.items())
        assert not (out_dir / "bench.json").exists()
    finally:
        if proc.poll() is None or left_of(started, timeout=0):
            kill_all(proc, started)
