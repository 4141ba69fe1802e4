"""Reliability and security through the real Serve application (SmolLM2 in every role):
degradation when the draft or judge dies, backpressure, bad input, API keys, fuzzing."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import grpc
import httpx
import pytest

from benchmarks.serving.loadtest import kill_one, replica_actor
from deployments.config import AppConfig, LookaheadDefaults, RoleDeployment, ServerConfig, VerifierConfig
from protos.grpc.health.v1 import health_pb2, health_pb2_grpc
from protos.lookahead.v1 import lookahead_pb2 as pb
from protos.lookahead.v1 import lookahead_pb2_grpc as pb_grpc
from tests.support.data import gsm8k, step_messages
from tests.support.serve_app import API_KEY, light, role

pytestmark = [pytest.mark.serve, pytest.mark.slow]
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MSG = [{"role": "user", "content": "List three facts about the Moon, one paragraph each."}]


def reliability_config(key_file: str) -> AppConfig:
    """SmolLM2-135M in every role, the judge as verifier, API keys, a tight orchestrator queue.

    The draft is Qwen2.5-0.5B: it never writes SmolLM2's step byte for byte, so every drafted step
    goes to the judge (the exact verifier, asked per request, then rejects them all and the answer
    is the target's own). A judge call gives up after 2 s, a draft call after 10 s (a normal one
    takes 1-3 s here): a replica restarting after a kill takes longer than that, so a draft or judge
    that is gone degrades the cycle instead of holding the request until its replacement is up,
    wherever in a cycle the kill lands.
    """
    tight = RoleDeployment(num_cpus=0, max_ongoing_requests=2, max_queued_requests=2)
    return AppConfig(
        target=role("smollm2-135m"), draft=role("qwen2.5-0.5b"), judge=role("smollm2-135m", 0.5),
        verifier=VerifierConfig(kind="llm-judge", numeric_guard=False, plan_guard=False),
        defaults=LookaheadDefaults(depth=2, max_tokens=24),
        server=ServerConfig(orchestrator=tight, ingress=light(), api_keys_file=key_file, max_tokens_limit=64,
                            draft_timeout_s=10, judge_timeout_s=2),
    )


@pytest.fixture(scope="module")
def app(serve_cluster, tmp_path_factory):
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"{API_KEY}\n")
    return serve_cluster.use(reliability_config(str(key_file)))


def post(app, path: str, body, headers=None, timeout=120) -> httpx.Response:
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{app.http}{path}", content=raw, timeout=timeout,
                      headers={"Content-Type": "application/json", **AUTH, **(headers or {})})


def chat(**kw) -> dict:
    return {"model": "lookahead", "messages": MSG, "max_tokens": 24, "temperature": 0, **kw}


def wait_ready(deployment: str, timeout: float = 180) -> None:
    from ray import serve

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = serve.status().applications["lookahead"].deployments[deployment].status
        if str(status).endswith("HEALTHY"):
            return
        time.sleep(1)
    raise AssertionError(f"{deployment} did not come back")


def stream_and_kill(app, body: dict, deployment: str) -> dict:
    """Stream a request and kill a replica of `deployment` as soon as its first step arrives.

    The request must span several cycles (short steps): the first event is the first cycle's
    steps, and the next cycle's draft call starts at once, so the kill lands while the request
    is using the replica or just before its next call.
    """
    import ray

    found = replica_actor(deployment)  # looked up before the request, so the kill itself is one call
    assert found, f"no replica of {deployment}"
    victim = found[1]
    text, stats, killed = "", {}, False
    with httpx.stream("POST", f"{app.http}/v1/chat/completions", json={**body, "stream": True,
                      "stream_options": {"include_usage": True}}, headers=AUTH, timeout=300) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if not killed:
                ray.kill(victim, no_restart=True)
                killed = True
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            text += "".join(step["text"] for step in chunk.get("lookahead", {}).get("steps", []))
            if chunk.get("usage"):
                stats = chunk["usage"]["lookahead"]
    assert killed
    return {"text": text, "stats": stats}


def ar_text(app, max_tokens: int, messages=MSG) -> str:
    r = post(app, "/v1/chat/completions", chat(max_tokens=max_tokens, messages=messages, lookahead={"mode": "ar"}))
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_draft_killed_mid_request_completes_as_target_only(app):
    # a fixed depth: the draft is asked every cycle (depth "auto" may stop asking it before the kill);
    # a question answered in short steps (SmolLM2 writes one line per step): 64 tokens take several
    # cycles, so the draft is asked after the kill (a request that fits in one cycle is over before its
    # first event arrives, and the kill misses it)
    messages = step_messages(gsm8k(1)[0]["question"])
    expected = ar_text(app, 64, messages)
    lookahead = {"mode": "lr", "verifier": "exact", "depth": 2}
    got = stream_and_kill(app, chat(max_tokens=64, messages=messages, lookahead=lookahead), "DraftEngine")
    assert got["text"] == expected  # exact verifier: lossless before the kill, target-only after
    assert got["stats"]["cycles"] >= 4, got["stats"]
    assert any(d.startswith("draft") for d in got["stats"]["degraded"]), json.dumps(got["stats"])
    wait_ready("DraftEngine")


def test_a_dead_judge_degrades_its_cycles_and_judging_resumes_when_it_is_back(app):
    """While every judge replica Serve starts is killed at once (so no judge can answer), a cycle
    that needs a verdict runs target-only and says so in `degraded` (speculation is tried again
    after a pause), and the request completes. Once the replica is left to come back, the judge
    rules again."""
    body = chat(max_tokens=64, messages=step_messages(gsm8k(1)[0]["question"]),
                lookahead={"mode": "lr", "verifier": "llm-judge", "depth": 1})
    before = post(app, "/v1/chat/completions", body).json()["usage"]["lookahead"]
    assert before["verified_steps"] >= 1 and not before["degraded"], before  # the judge rules
    stop = threading.Event()

    def keep_killing() -> None:
        while not stop.is_set():
            kill_one("JudgeEngine")
            stop.wait(0.5)

    killer = threading.Thread(target=keep_killing)
    killer.start()
    try:
        r = post(app, "/v1/chat/completions", body)
    finally:
        stop.set()
        killer.join()
    assert r.status_code == 200, r.text
    stats = r.json()["usage"]["lookahead"]
    assert r.json()["usage"]["completion_tokens"] == stats["tokens"] > 0
    assert any(d.startswith("verifier") for d in stats["degraded"]), json.dumps(stats)
    assert stats["verified_steps"] == 0 and stats["cycles"] >= 2, json.dumps(stats)
    wait_ready("JudgeEngine")
    again = post(app, "/v1/chat/completions", body).json()["usage"]["lookahead"]
    assert again["verified_steps"] >= 1 and not again["degraded"], again


def test_overload_is_refused_at_once_with_503(app):
    """Orchestrator: 2 ongoing + 2 queued. Of a burst of 12 long requests some complete and the rest
    are refused with 503 `overloaded` at once, with Retry-After: every refusal arrives before the
    first answer."""
    results: list[tuple[int, float]] = []
    refusals: list[tuple[str, str | None]] = []  # (error code, Retry-After) of each 503

    def one():
        r = post(app, "/v1/chat/completions", chat(max_tokens=40, lookahead={"mode": "ar"}), timeout=300)
        results.append((r.status_code, time.monotonic()))
        if r.status_code == 503:
            refusals.append((r.json()["error"]["code"], r.headers.get("retry-after")))

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(c for c, _ in results)
    assert codes.count(200) >= 2 and codes.count(503) >= 4, codes
    assert set(codes) <= {200, 503}
    assert refusals and all(code == "overloaded" and int(after) >= 1 for code, after in refusals), refusals
    first_answer = min(t for c, t in results if c == 200)
    assert all(t < first_answer for c, t in results if c == 503)  # refused, not queued behind the work


@pytest.mark.parametrize("body, status, field", [
    (b'{"model": "lookahead", "messages": [', 400, None),  # invalid JSON
    (b'\xff\xfe{"model": "\xff"}', 400, None),  # invalid UTF-8
    (chat(max_tokens="many"), 400, "max_tokens"),
    (chat(max_tokens=-5), 400, "max_tokens"),
    (chat(max_tokens=10**9), 400, "max_tokens"),
    (chat(max_tokens=1000), 400, "max_tokens"),  # above this server's max_tokens_limit
    (chat(messages=[]), 400, "messages"),
    (chat(messages=[{"role": "user", "content": "   "}]), 400, "messages"),
    (chat(messages=[{"role": "wizard", "content": "hi"}]), 400, "messages"),
    (chat(temperature=-1), 400, "temperature"),
    (chat(lookahead={"depth": 99}), 400, "lookahead.depth"),
    (chat(lookahead={"width": 0}), 400, "lookahead.width"),
    (chat(lookahead={"mode": "turbo"}), 400, "lookahead.mode"),
    (chat(model="gpt-17"), 404, "model"),
    (chat(messages=[{"role": "user", "content": "word " * 9000}], max_tokens=64), 400, "messages"),
])
def test_bad_http_input_gets_4xx_with_field(app, body, status, field):
    r = post(app, "/v1/chat/completions", body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if field:
        assert field in (err.get("param") or "") or field in err["message"], err


def test_oversized_body_413(app):
    r = post(app, "/v1/chat/completions", chat(messages=[{"role": "user", "content": "x" * (2 << 20)}]))
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_replica_survives_bad_input(app):
    for _ in range(3):
        post(app, "/v1/chat/completions", b"\x00\x01garbage")
    r = post(app, "/v1/chat/completions", chat(max_tokens=4))
    assert r.status_code == 200


def test_api_keys_http(app):
    body = chat(max_tokens=4)
    assert post(app, "/v1/chat/completions", body, headers={"Authorization": ""}).status_code == 401
    r = post(app, "/v1/chat/completions", body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{app.http}/v1/models").status_code == 401
    assert httpx.get(f"{app.http}/health").status_code == 200  # health stays open
    assert httpx.get(f"{app.http}/v1/models", headers=AUTH).status_code == 200


def test_grpc_auth_and_invalid_argument(app):
    with grpc.insecure_channel(app.grpc) as channel:
        stub = pb_grpc.LookaheadServiceStub(channel)
        assert stub.Health(pb.HealthRequest()).status == "SERVING"  # open without a key
        ok = pb.GenerateRequest(prompt="The sky is", max_tokens=4)
        for key in (None, "Bearer wrong", API_KEY + "x"):  # none, a wrong one, a near miss
            metadata = () if key is None else (("authorization", key),)
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(ok, metadata=metadata, timeout=60)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, key
            with pytest.raises(grpc.RpcError) as err:
                list(stub.GenerateStream(ok, metadata=metadata, timeout=60))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, key
        md = (("authorization", f"Bearer {API_KEY}"),)
        assert stub.Generate(ok, metadata=md, timeout=120).text
        for bad, field in [(pb.GenerateRequest(prompt=""), "prompt"),
                           (pb.GenerateRequest(prompt="x", temperature=-2), "temperature"),
                           (pb.GenerateRequest(prompt="x", max_tokens=-1), "max_tokens"),
                           (pb.GenerateRequest(prompt="x", lookahead=pb.LookaheadOptions(width=50)), "width"),
                           (pb.GenerateRequest(prompt="x", lookahead=pb.LookaheadOptions(mode="bogus")), "mode")]:
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(bad, metadata=md, timeout=60)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
            assert field in err.value.details()


def test_grpc_standard_health_per_role(app):
    """grpc.health.v1, as Kubernetes gRPC probes and grpc_health_probe speak it: the server as a
    whole, the lookahead service and each deployed role; no API key needed."""
    with grpc.insecure_channel(app.grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        for service in ("", "lookahead.v1.LookaheadService", "target"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=60).status == serving
        for role in ("draft", "judge"):  # an earlier test may have killed one: it comes back
            deadline = time.time() + 180
            while health.Check(health_pb2.HealthCheckRequest(service=role), timeout=60).status != serving:
                assert time.time() < deadline, f"{role} never reported SERVING"
                time.sleep(1)
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="lookahead.v2.Nothing"), timeout=60)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert [r.status for r in health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)] == [serving]
        assert [r.status for r in health.Watch(health_pb2.HealthCheckRequest(service="nothing"), timeout=60)] == \
            [health_pb2.HealthCheckResponse.SERVICE_UNKNOWN]


def test_deadline_exceeded(app):
    r = post(app, "/v1/chat/completions", chat(max_tokens=64, lookahead={"mode": "lr"}),
             headers={"x-request-timeout": "0.5"})
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"


def test_fuzz_openapi_no_5xx(app):
    """Schemathesis over the OpenAPI schema: bounded cases, no server errors."""
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{app.http}/openapi.json", "--checks",
           "not_a_server_error", "--max-examples", "15", "-H", f"Authorization: Bearer {API_KEY}",
           "--request-timeout", "120", "--generation-deterministic", "--phases", "examples,coverage,fuzzing"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
