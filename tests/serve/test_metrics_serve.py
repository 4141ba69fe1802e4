"""The metrics a running application exports, scraped from Ray's real metrics endpoint, and the
one log line per request with the id a client sees.

One Serve application on local Ray (CPU, fake GPUs), real small models: SmolLM2-135M as target
(with prompt-lookup token speculation), draft and judge. A handful of requests end each way a
request can end (finished, refused, timed out, cancelled by the client, degraded to target-only),
then the node's Prometheus endpoint (`metrics_export_port`) must show every series of
deployments/serve/metrics.py with the values those requests imply: measured as the increase over
a scrape taken before them, since the session's other applications export to the same endpoint.
"""
from __future__ import annotations

import time
import urllib.request
from collections import defaultdict

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deployments.config import AppConfig, LookaheadDefaults, ServerConfig, VerifierConfig
from deployments.serve.metrics import OTHERS, SERIES
from tests.support.data import gsm8k
from tests.support.serve_app import light, role

pytestmark = [pytest.mark.serve, pytest.mark.slow]
QUESTION = [{"role": "user", "content": gsm8k(1)[0]["question"]}]


def metrics_config() -> AppConfig:
    return AppConfig(
        # target and draft are the same model: greedy drafts match, so acceptance moves
        target=role("smollm2-135m", 1, token_speculation="ngram"),
        draft=role("smollm2-135m", 1),
        judge=role("smollm2-135m", 0.5),
        # no guards in front of the judge: sampled steps differ in their numbers, and the numeric
        # guard would reject those without asking the judge, so no judge call would time out
        verifier=VerifierConfig(kind="exact", numeric_guard=False, plan_guard=False),
        # steps of at most 16 tokens: a cycle emits at most (2 + 1) * 16 = 48 tokens, so a 64-token
        # answer streams in several chunks (time per output token needs a second one)
        defaults=LookaheadDefaults(depth=2, max_tokens=24, max_step_tokens=16),
        # a judge call cannot answer in 0.1 ms: a request asking for the judge degrades
        server=ServerConfig(orchestrator=light(), ingress=light(), max_tokens_limit=64, judge_timeout_s=1e-4),
    )


@pytest.fixture(scope="module")
def app(serve_cluster):
    deployed = serve_cluster.use(metrics_config())
    return {"http": deployed.http, "metrics_url": serve_cluster.metrics_url, "serve_logs": serve_cluster.serve_logs,
            "before": scrape(serve_cluster.metrics_url)}


def chat(c: httpx.Client, **body) -> httpx.Response:
    headers = body.pop("headers", {})
    return c.post("/v1/chat/completions", headers=headers,
                  json={"model": "lookahead", "messages": QUESTION, "temperature": 0, **body})


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """Prometheus text -> sample name -> {labels (ours only) -> value summed over Ray's labels}."""
    ray_labels = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "ReplicaId", "JobId"}
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    out: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items()
                                  if k not in ray_labels and not k.startswith("otel_")))
            out[s.name][labels] += s.value
    return out


def increase(now: dict, before: dict) -> dict[str, dict[tuple, float]]:
    """Each sample's growth since `before` (gauges too: the active-sessions gauge starts at 0)."""
    return {name: {labels: v - before.get(name, {}).get(labels, 0.0) for labels, v in series.items()}
            for name, series in now.items()}


def total(samples: dict[str, dict[tuple, float]], name: str, **match) -> float:
    want = {(k, str(v)) for k, v in match.items()}
    return sum(v for labels, v in samples.get(name, {}).items() if want <= set(labels))


def test_every_series_moves_and_each_request_is_logged_once(app):
    with httpx.Client(base_url=app["http"], timeout=300) as c:
        ok = chat(c, max_tokens=64)  # several cycles: a first chunk, then more
        assert ok.status_code == 200, ok.text
        refused = chat(c, max_tokens=100)  # over the server's max_tokens_limit of 64
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_tokens"
        # a deadline the orchestrator reaches (it gets the request in milliseconds) and that ends the
        # request mid-answer (64 tokens take seconds): the orchestrator's deadline fires and counts it
        late = chat(c, max_tokens=64, headers={"x-request-timeout": "0.3"})
        assert late.status_code == 504
        # sampled, draft and target seeds differ, so some drafts differ from the target's step and
        # reach the judge (identical ones are settled by the equality pre-check), which times out
        degraded = chat(c, max_tokens=48, temperature=1.0, lookahead={"verifier": "llm-judge"})
        assert degraded.status_code == 200, degraded.text
        with c.stream("POST", "/v1/chat/completions",
                      json={"model": "lookahead", "messages": QUESTION, "max_tokens": 64, "stream": True}) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the first event, then the client goes away mid-answer
    body = ok.json()
    usage = body["usage"]
    verify_s = sum(r.json()["usage"]["lookahead"]["verify_s"] for r in (ok, degraded))

    # the target speculates tokens (n-gram), so the lr requests ran, and are counted, as lr+sd
    expect = {  # exported name, labels -> lower bound
        ("ray_lookahead_requests_total", (("mode", "lr+sd"), ("status", "ok"))): 2,
        ("ray_lookahead_requests_total", (("status", "bad_request"),)): 1,
        ("ray_lookahead_requests_total", (("status", "timeout"),)): 1,
        ("ray_lookahead_requests_total", (("status", "cancelled"),)): 1,
        # vLLM's request_success: the refusal was never admitted; the deadline and the hang-up abort
        ("ray_lookahead_request_success_total", (("finished_reason", "abort"),)): 2,
        ("ray_lookahead_errors_total", (("kind", "bad_request"), ("reason", "max_tokens"))): 1,
        ("ray_lookahead_errors_total", (("kind", "timeout"),)): 1,
        ("ray_lookahead_errors_total", (("kind", "cancelled"),)): 1,
        ("ray_lookahead_errors_total", (("kind", "degraded"), ("reason", "verifier"))): 1,
        ("ray_lookahead_prompt_tokens_total", (("mode", "lr+sd"),)): 2 * usage["prompt_tokens"],
        ("ray_lookahead_generation_tokens_total", (("mode", "lr+sd"),)): usage["completion_tokens"],
        ("ray_lookahead_steps_total", (("source", "draft"),)): 1,
        ("ray_lookahead_steps_total", (("source", "target"),)): 1,
        ("ray_lookahead_draft_positions_verified_total", (("depth", "0"), ("verifier", "exact"))): 1,
        ("ray_lookahead_draft_positions_accepted_total", (("depth", "0"), ("verifier", "exact"))): 1,
        ("ray_lookahead_verdicts_total", (("verdict", "accepted"),)): 1,
        ("ray_lookahead_cycle_phase_seconds_total", (("phase", "draft"),)): 1e-6,
        ("ray_lookahead_cycle_phase_seconds_total", (("phase", "target"),)): 1e-6,
        # the verifier's time the finished requests report (CI runs saw none at all: every draft
        # equal to its target, or stopped differently, settled before the verifier)
        ("ray_lookahead_cycle_phase_seconds_total", (("phase", "verify"),)): 0.999 * verify_s,
        ("ray_lookahead_cycle_phase_seconds_total", (("phase", "wall"),)): 1e-6,
        ("ray_lookahead_spec_decode_num_draft_tokens_total", (("role", "target"),)): 1,
        ("ray_lookahead_spec_decode_num_accepted_tokens_total", (("role", "target"),)): 1,
        ("ray_lookahead_time_to_first_token_seconds_count", (("mode", "lr+sd"), ("model_name", "lookahead"))): 2,
        ("ray_lookahead_request_time_per_output_token_seconds_count", (("mode", "lr+sd"),)): 1,
        ("ray_lookahead_e2e_request_latency_seconds_count", ()): 5,
        ("ray_lookahead_engine_call_seconds_count", (("method", "generate_steps"), ("role", "target"))): 1,
        ("ray_lookahead_engine_call_seconds_count", (("method", "generate_steps"), ("role", "draft"))): 1,
        ("ray_lookahead_engine_call_seconds_count", (("method", "choice_probs"), ("outcome", "timeout"),
                                                     ("role", "judge"))): 1,
        ("ray_lookahead_chosen_depth_count", (("mode", "lr+sd"),)): 1,
        ("ray_lookahead_step_acceptance_count", (("verifier", "exact"),)): 1,
    }
    for reason in {r.json()["choices"][0]["finish_reason"] for r in (ok, degraded)}:  # stop or length
        expect[("ray_lookahead_request_success_total", (("finished_reason", reason), ("mode", "lr+sd"),
                                                        ("model_name", "lookahead")))] = \
            sum(r.json()["choices"][0]["finish_reason"] == reason for r in (ok, degraded))
    # every series of the catalogue is checked above, or (the gauge) present below
    checked = {name.removesuffix("_count") for name, _ in expect}
    assert checked | {"ray_lookahead_active_sessions"} == {s.exported for s in SERIES.values()}

    deadline = time.monotonic() + 120  # Ray exports every few seconds
    while True:
        samples = increase(scrape(app["metrics_url"]), app["before"])
        short = {f"{n}{dict(lb)}": (total(samples, n, **dict(lb)), lo)
                 for (n, lb), lo in expect.items() if total(samples, n, **dict(lb)) < lo}
        if not short and "ray_lookahead_active_sessions" in samples:
            break
        assert time.monotonic() < deadline, f"series below their expected values (got, want): {short}"
        time.sleep(3)
    assert total(samples, "ray_lookahead_active_sessions") == 0  # every session ended
    # counted once each: nothing double-counted by the stream wrapper
    assert total(samples, "ray_lookahead_requests_total") == 5
    assert total(samples, "ray_lookahead_requests_total", status="ok") == 2
    assert total(samples, "ray_lookahead_request_success_total") == 4  # all but the refusal
    accepted = total(samples, "ray_lookahead_draft_positions_accepted_total")
    assert accepted <= total(samples, "ray_lookahead_draft_positions_verified_total")

    # Ray Serve's own series the dashboard reads (replicas, queues) are there, by deployment
    now = scrape(app["metrics_url"])
    for name, labels in OTHERS.items():
        if name.startswith("ray_serve_") and name != "ray_serve_num_http_error_requests_total":
            keys = {k for lb in now.get(name, {}) for k, _ in lb}
            assert set(labels) <= keys, f"{name}: labels {sorted(keys)}, the dashboard reads {labels}"
    for deployment in ("Ingress", "Orchestrator", "TargetEngine", "DraftEngine", "JudgeEngine"):
        assert total(now, "ray_serve_deployment_replica_healthy", deployment=deployment) >= 1, deployment
        assert total(now, "ray_serve_autoscaling_target_replicas", deployment=deployment) >= 1, deployment
        assert any(("deployment", deployment) in lb for lb in now["ray_serve_replica_processing_queries"])
    for deployment in ("Orchestrator", "TargetEngine", "DraftEngine", "JudgeEngine"):  # called through handles
        assert any(("deployment", deployment) in lb for lb in now["ray_serve_deployment_queued_queries"])
    assert total(now, "ray_serve_num_http_error_requests_total", error_code="400") >= 1  # the refusal

    # item 3: the OpenAI id embeds Serve's request id; that id is on the orchestrator's one line
    # for the request, and on the engine replicas' log lines for the calls it made
    rid = ok.headers["x-request-id"]
    assert body["id"] == f"chatcmpl-{rid}"
    logs = {p.name: p.read_text(errors="replace") for p in app["serve_logs"].glob("replica_*.log")}
    orch = "".join(t for n, t in logs.items() if "Orchestrator" in n)
    (line,) = [ln for ln in orch.splitlines() if f"lookahead request chatcmpl-{rid} " in ln]
    assert "status=ok" in line and f"tokens={usage['completion_tokens']}" in line and "wall=" in line
    assert "acceptance=" in line and "mode=lr+sd " in line
    assert rid in line.split("lookahead request")[0]  # Serve's own request-id field of the log line
    assert any(rid in t for n, t in logs.items() if "TargetEngine" in n)
    assert any(rid in t for n, t in logs.items() if "DraftEngine" in n)
    refused_line = [ln for ln in orch.splitlines() if f"chatcmpl-{refused.headers['x-request-id']} " in ln]
    assert len(refused_line) == 1 and "status=bad_request reason=max_tokens" in refused_line[0]
