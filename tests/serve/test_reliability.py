"""Reliability and security through the real Serve application (SmolLM2 in every role):
backpressure, bad input, API keys, fuzzing, and the errors Serve's proxy would otherwise answer
itself in plain text (a full ingress, the proxy's timeout, a dead orchestrator replica). A target, draft or judge replica killed under load, and the
judge ruling again once it is back: test_replica_death.py."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

import grpc
import httpx
import pytest

from benchmarks.serving.loadtest import kill_one
from deployments.config import AppConfig, LookaheadDefaults, RoleDeployment, ServerConfig, VerifierConfig
from protos.grpc.health.v1 import health_pb2, health_pb2_grpc
from protos.lookahead.v1 import lookahead_pb2 as pb
from protos.lookahead.v1 import lookahead_pb2_grpc as pb_grpc
from tests.support.serve_app import API_KEY, role

pytestmark = [pytest.mark.serve, pytest.mark.slow]
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MSG = [{"role": "user", "content": "List three facts about the Moon, one paragraph each."}]


def reliability_config(key_file: str) -> AppConfig:
    """SmolLM2-135M in every role, the judge as verifier, API keys, a tight orchestrator queue and
    a small ingress: it holds 4 + 2 = 6 generation requests (ADMITTED), counted by the ingress itself.

    The draft is Qwen2.5-0.5B: it never writes SmolLM2's step byte for byte, so every drafted step
    goes to the judge (the exact verifier, asked per request, then rejects them all and the answer
    is the target's own). A judge call gives up after 2 s, a draft call after 10 s (a normal one
    takes 1-3 s here): a replica restarting after a kill takes longer than that, so a draft or judge
    that is gone degrades the cycle instead of holding the request until its replacement is up,
    wherever in a cycle the kill lands.
    """
    tight = RoleDeployment(num_cpus=0, max_ongoing_requests=2, max_queued_requests=2)
    ingress = RoleDeployment(num_cpus=0, max_ongoing_requests=ADMITTED - 2, max_queued_requests=2)
    return AppConfig(
        target=role("smollm2-135m"), draft=role("qwen2.5-0.5b"), judge=role("smollm2-135m", 0.5),
        verifier=VerifierConfig(kind="llm-judge", numeric_guard=False, plan_guard=False),
        defaults=LookaheadDefaults(depth=2, max_tokens=24),
        server=ServerConfig(orchestrator=tight, ingress=ingress, api_keys_file=key_file, max_tokens_limit=64,
                            draft_timeout_s=10, judge_timeout_s=2),
    )


ADMITTED = 6  # generation requests the ingress holds at once


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


def kill_replica(deployment: str) -> None:
    assert kill_one(deployment), f"no replica of {deployment}"


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


# -- errors Serve's proxy would answer in plain text -----------------------------------------------
INTERNALS = [re.compile(r"actor", re.I), re.compile(r"\b[0-9a-f]{16,}\b", re.I),  # Ray's actor, node, task ids
             re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b"), re.compile(r"Traceback|ray\.", re.I)]


def assert_openai_error(r: httpx.Response, status: int, code: str) -> dict:
    """An OpenAI error body with `code` (and Retry-After on a 503), naming nothing internal."""
    assert r.status_code == status, (r.status_code, r.headers.get("content-type"), r.text)
    assert r.headers["content-type"].startswith("application/json"), r.text  # never Serve's plain text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["type"], err
    if status == 503:
        assert int(r.headers["retry-after"]) >= 1
    assert_clean(r.text)
    return err


def assert_clean(text: str) -> None:
    leaks = [p.pattern for p in INTERNALS if p.search(text)]
    assert not leaks, (leaks, text)


def hold_ingress_slots(app, n: int) -> list[socket.socket]:
    """n chat requests whose bodies never finish arriving: each holds one of the ingress's places
    (as a slow client would) without reaching the orchestrator."""
    url = urlparse(app.http)
    body = json.dumps(chat(max_tokens=4)).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    socks = []
    for _ in range(n):
        sock = socket.create_connection((url.hostname, url.port), timeout=60)
        sock.sendall(head + body[:10])
        socks.append(sock)
    return socks


def until(app, status: int, body: dict, timeout: float = 120) -> httpx.Response:
    """Send `body` until it gets `status` (the ingress sees the held requests a moment after
    they were sent, and frees their places a moment after they went away)."""
    deadline = time.time() + timeout
    while True:
        r = post(app, "/v1/chat/completions", body)
        if r.status_code == status or time.time() > deadline:
            return r
        time.sleep(0.2)


def test_a_full_ingress_refuses_in_openai_shape_never_serves_plain_text(app):
    """More requests than the ingress holds (ADMITTED, Serve given no limit of its own): every
    refused one, HTTP or gRPC, is the application's 503 `overloaded` with Retry-After (gRPC:
    RESOURCE_EXHAUSTED), none is Serve's plain-text 503; the places come back when the held
    requests go away."""
    socks = hold_ingress_slots(app, ADMITTED)
    try:
        assert_openai_error(until(app, 503, chat(max_tokens=1)), 503, "overloaded")
        burst: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda: burst.append(post(app, "/v1/chat/completions", chat())))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(burst) == 8
        for r in burst:
            assert_openai_error(r, 503, "overloaded")
        md = (("authorization", f"Bearer {API_KEY}"),)
        with grpc.insecure_channel(app.grpc) as channel:
            stub = pb_grpc.LookaheadServiceStub(channel)
            for call in (stub.Generate, lambda *a, **kw: list(stub.GenerateStream(*a, **kw))):
                with pytest.raises(grpc.RpcError) as err:
                    call(pb.GenerateRequest(prompt="The sky is", max_tokens=4), metadata=md, timeout=60)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
                assert "overloaded" in err.value.details()
                assert_clean(err.value.details())
            assert stub.Health(pb.HealthRequest(), timeout=60).status == "SERVING"  # not counted
        assert httpx.get(f"{app.http}/health", timeout=60).status_code == 200
    finally:
        for sock in socks:
            sock.close()
    r = until(app, 200, chat(max_tokens=1))
    assert r.status_code == 200, r.text


def test_a_proxy_timeout_is_answered_by_the_application(app):
    """Serve's own per-request timeout header (x-request-timeout-seconds: its HTTP proxy answers 408
    in plain text when it runs out) ends the request earlier, with the application's OpenAI 504,
    streamed or not; gRPC's deadline (x-request-timeout metadata) is DEADLINE_EXCEEDED."""
    long = chat(max_tokens=64, lookahead={"mode": "lr"})
    assert_openai_error(post(app, "/v1/chat/completions", long, headers={"x-request-timeout-seconds": "1"}),
                        504, "deadline_exceeded")
    events = []
    with httpx.stream("POST", f"{app.http}/v1/chat/completions", json={**long, "stream": True}, timeout=120,
                      headers={**AUTH, "x-request-timeout-seconds": "1"}) as resp:
        assert resp.status_code == 200
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events  # ended by the application, not cut by the proxy
    err = json.loads(events[-2])["error"]
    assert err["code"] == "deadline_exceeded", err
    md = (("authorization", f"Bearer {API_KEY}"), ("x-request-timeout", "0.5"))
    with grpc.insecure_channel(app.grpc) as channel:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.LookaheadServiceStub(channel).Generate(
                pb.GenerateRequest(prompt="The sky is", max_tokens=64), metadata=md, timeout=120)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "deadline" in err.value.details()
    assert_clean(err.value.details())


def sessions(orch) -> list[str]:
    try:
        return orch.active_sessions.remote().result(timeout_s=60)
    except Exception:  # noqa: BLE001 - a replica killed a moment ago may still be asked: ask again
        return []


def kill_orchestrator_during(app, call):
    """Run `call` in a thread, kill the orchestrator replica while its session runs, and return what
    `call` returned once it ended; then wait for the replica Serve starts in its place."""
    result: dict = {}
    caller = threading.Thread(target=lambda: result.update(out=call()))
    caller.start()
    orch = app.deployment("Orchestrator")  # its one other place (max_ongoing_requests 2) answers this
    deadline = time.time() + 120
    while not sessions(orch):
        assert time.time() < deadline, "no session started"
        time.sleep(0.05)
    kill_replica("Orchestrator")
    caller.join()
    app.wait_healthy("Orchestrator")
    assert until(app, 200, chat(max_tokens=4)).status_code == 200  # the new replica serves
    return result["out"]


def test_a_dead_orchestrator_replica_is_a_clean_503(app):
    """The orchestrator replica killed mid-request: a request gets a 503 `replica_unavailable`
    (Retry-After) that names no actor, id or address (Ray's error text does); killed mid-stream,
    an HTTP stream ends with that error event and [DONE], a gRPC stream with UNAVAILABLE."""
    long = chat(max_tokens=64, lookahead={"mode": "lr"})
    assert_openai_error(kill_orchestrator_during(app, lambda: post(app, "/v1/chat/completions", long)),
                        503, "replica_unavailable")

    def stream() -> list[str]:
        with httpx.stream("POST", f"{app.http}/v1/chat/completions", json={**long, "stream": True},
                          headers=AUTH, timeout=120) as resp:
            assert resp.status_code == 200
            return [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]

    events = kill_orchestrator_during(app, stream)
    assert events[-1] == "[DONE]", events
    assert json.loads(events[-2])["error"]["code"] == "replica_unavailable", events
    assert_clean(events[-2])

    def grpc_stream() -> grpc.RpcError | None:
        with grpc.insecure_channel(app.grpc) as channel:
            try:
                list(pb_grpc.LookaheadServiceStub(channel).GenerateStream(
                    pb.GenerateRequest(prompt="List three facts about the Moon.", max_tokens=64),
                    metadata=(("authorization", f"Bearer {API_KEY}"),), timeout=120))
            except grpc.RpcError as exc:
                return exc
        return None

    err = kill_orchestrator_during(app, grpc_stream)
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE, err
    assert_clean(err.details())
