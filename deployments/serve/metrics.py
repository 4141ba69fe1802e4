"""Every metric the application exports, defined once, through Ray's metrics (``ray.serve.metrics``):
the place Ray Serve and Ray Serve LLM put theirs, scraped from each node's metrics export port.

Where a series means what one of vLLM's means, it has vLLM's name, labels and bucket edges
(``vllm:request_success{finished_reason}`` -> ``lookahead_request_success_total``,
``vllm:spec_decode_num_draft_tokens`` -> ``lookahead_spec_decode_num_draft_tokens_total``,
``vllm:time_to_first_token_seconds`` ...), with ``_`` instead of ``:``: Ray 2.60 warns that ``:``
is no longer allowed and its OpenTelemetry export drops such series (vLLM's own Ray wrappers
rewrite ``:`` the same way). What vLLM has no name for (steps drafted, verified and accepted,
speculation depth, verdicts) stays ours under the same prefix. Ray prefixes ``ray_`` on export,
so Prometheus sees ``ray_lookahead_requests_total`` and ``ray_vllm_...``. Counters carry
``_total`` in their Ray name, which keeps the exported name the same whether or not an exporter
appends the suffix. Ray records a histogram's ``_sum`` from bucket midpoints, so averages from
``_sum / _count`` are approximate (dashboards use quantiles over the buckets), except the chosen
depth's, whose edges make its mean exact.

One :class:`RequestMeter` per request, in the orchestrator, sees the stream the client gets and
ends in a ``finally``: failures, timeouts and cancellations are counted, not only successes,
and one log line per finished request is written there (``lookahead request ...``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ray.serve import metrics

from deployments.api.errors import BadRequest, DeadlineExceeded

log = logging.getLogger("ray.serve")

PREFIX = "lookahead_"
# vLLM's bucket edges for the same three histograms (vLLM 0.32: time to first token, inter-token
# latency, request latency), so a panel reads alike over ray_vllm_* and ray_lookahead_*; the
# first-token edges reach past the longest request deadline (server.request_timeout_s: 600 s).
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0]
E2E_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0]
CALL_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
# Depths are integers 0..16. Ray records a histogram's _sum from bucket midpoints (+Inf: twice the
# last edge), so an edge just above 0 and one at every half-integer make the mean depth
# (_sum / _count) exact: depth 0 counts as 5e-7, depth d as d.
DEPTH_BUCKETS = [1e-6] + [d + 0.5 for d in range(17)]
RATE_BUCKETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
PHASES = ("draft", "target", "verify", "wall")
# Request outcomes (requests_total's status) and error kinds (errors_total's kind).
STATUSES = ("ok", "bad_request", "timeout", "cancelled", "error")
# Refusals before a request reaches the orchestrator (401, 404, 503 when queues are full) are in
# Serve's own ray_serve_num_http_error_requests_total{error_code=...}.
ERROR_KINDS = ("bad_request", "timeout", "cancelled", "degraded", "error")
# request_success_total's finished_reason, as vLLM's: the answer's own (stop, length), abort for a
# request the client or its deadline ended, error for a server failure; refusals are not admitted
FINISHED_REASONS = {"timeout": "abort", "cancelled": "abort", "error": "error"}
#: vLLM's per-engine label: here the application's served model name (one application, one name)
MODEL = "model_name"


@dataclass(frozen=True)
class Series:
    kind: str  # counter, histogram, gauge
    name: str
    description: str
    tags: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()

    @property
    def exported(self) -> str:
        """The name Prometheus scrapes from Ray's export port."""
        return "ray_" + self.name


# The catalogue: the dashboard (docs/grafana/) and the metrics test read it, so a series cannot
# be renamed in one place and not the other.
SERIES: dict[str, Series] = {s.name: s for s in (
    Series("counter", PREFIX + "requests_total", "finished requests by outcome", ("mode", "status")),
    Series("counter", PREFIX + "errors_total", "failed, timed-out, cancelled and degraded requests", ("kind", "reason")),
    Series("counter", PREFIX + "request_success_total", "admitted requests that ended, by why they ended",
           (MODEL, "mode", "finished_reason")),
    Series("counter", PREFIX + "prompt_tokens_total", "prompt tokens of finished requests", (MODEL, "mode")),
    Series("counter", PREFIX + "generation_tokens_total", "tokens generated for finished requests", (MODEL, "mode")),
    Series("counter", PREFIX + "steps_total", "emitted steps by who wrote them", ("mode", "source")),
    Series("counter", PREFIX + "draft_positions_verified_total", "drafted steps a verifier ruled on",
           ("depth", "verifier")),
    Series("counter", PREFIX + "draft_positions_accepted_total", "drafted steps accepted", ("depth", "verifier")),
    Series("counter", PREFIX + "verdicts_total", "verdicts by the verifier that decided them (pre-checks included)",
           ("verifier", "verdict")),
    Series("counter", PREFIX + "cycle_phase_seconds_total", "seconds spent per phase (draft, target, verify; wall)",
           ("mode", "phase")),
    Series("counter", PREFIX + "spec_decode_num_draft_tokens_total", "token-level speculation: tokens proposed",
           ("role",)),
    Series("counter", PREFIX + "spec_decode_num_accepted_tokens_total", "token-level speculation: tokens accepted",
           ("role",)),
    Series("histogram", PREFIX + "time_to_first_token_seconds", "request start to first streamed text",
           (MODEL, "mode"), tuple(TTFT_BUCKETS)),
    Series("histogram", PREFIX + "request_time_per_output_token_seconds",
           "per request, mean seconds per token after the first chunk", (MODEL, "mode"), tuple(TPOT_BUCKETS)),
    Series("histogram", PREFIX + "e2e_request_latency_seconds", "request wall time", (MODEL, "mode", "status"),
           tuple(E2E_BUCKETS)),
    Series("histogram", PREFIX + "engine_call_seconds", "orchestrator -> engine call time, transport included",
           ("role", "method", "outcome"), tuple(CALL_BUCKETS)),
    Series("histogram", PREFIX + "chosen_depth", "speculation depth chosen per cycle", ("mode",),
           tuple(DEPTH_BUCKETS)),
    Series("histogram", PREFIX + "step_acceptance", "per-request share of drafted steps accepted", ("verifier",),
           tuple(RATE_BUCKETS)),
    Series("gauge", PREFIX + "active_sessions", "sessions in flight on this orchestrator replica"),
)}


# Series of Ray Serve's and vLLM's own that the dashboard reads, with the labels it reads them by
# (Ray adds SessionName, NodeAddress, WorkerId, ... to all). Ray Serve exports its series for every
# deployment (replica health per replica while RAY_SERVE_CONTROLLER_METRICS_INCLUDE_HIGH_CARDINALITY_TAGS
# is on, Serve's default); vLLM's Ray stat logger exports its series from vLLM engine replicas, tagged
# with the Serve replica's id: ReplicaId there is Serve's `replica`, which is how the dashboard
# tells a vLLM series' role (its Serve deployment: TargetEngine, DraftEngine, JudgeEngine).
OTHERS: dict[str, tuple[str, ...]] = {
    "ray_serve_num_http_error_requests_total": ("error_code",),
    "ray_serve_deployment_replica_healthy": ("deployment", "replica", "application"),
    "ray_serve_autoscaling_target_replicas": ("deployment", "application"),
    "ray_serve_deployment_queued_queries": ("deployment", "application"),
    "ray_serve_replica_processing_queries": ("deployment", "replica", "application"),
    "ray_vllm_kv_cache_usage_perc": ("ReplicaId",),
    "ray_vllm_num_requests_running": ("ReplicaId",),
    "ray_vllm_num_requests_waiting": ("ReplicaId",),
    "ray_vllm_generation_tokens_total": ("ReplicaId",),
}


def _make(s: Series):
    if s.kind == "counter":
        return metrics.Counter(s.name, s.description, tag_keys=s.tags)
    if s.kind == "histogram":
        return metrics.Histogram(s.name, s.description, boundaries=list(s.boundaries), tag_keys=s.tags)
    return metrics.Gauge(s.name, s.description, tag_keys=s.tags)


class LookaheadMetrics:
    """The live Ray metric objects of one replica (create once per replica: Ray registers by name)."""

    def __init__(self, names: list[str] | None = None, model_name: str = "lookahead") -> None:
        self.m = {name: _make(SERIES[name]) for name in (names or SERIES)}
        self.active = 0
        self.model_name = model_name

    def inc(self, name: str, value: float = 1.0, **tags) -> None:
        if value:
            self.m[PREFIX + name].inc(value, tags={k: str(v) for k, v in tags.items()} or None)

    def observe(self, name: str, value: float, **tags) -> None:
        self.m[PREFIX + name].observe(value, tags={k: str(v) for k, v in tags.items()} or None)

    def set_active(self, delta: int) -> None:
        self.active += delta
        self.m[PREFIX + "active_sessions"].set(self.active)

    def engine_call(self, role: str, method: str, seconds: float, outcome: str) -> None:
        """RemoteEngine's observer: one engine call, from the orchestrator's side."""
        self.observe("engine_call_seconds", seconds, role=role, method=method, outcome=outcome)

    def error(self, kind: str, reason: str) -> None:
        self.inc("errors_total", kind=kind, reason=reason or "unknown")

    def request(self, request_id: str, mode: str, verifier: str) -> "RequestMeter":
        return RequestMeter(self, request_id, mode, verifier)


def outcome_of(exc: BaseException | None) -> tuple[str, str]:
    """(status, reason) of a request that ended with ``exc`` (None: it finished)."""
    if exc is None:
        return "ok", ""
    if isinstance(exc, BadRequest):
        return "bad_request", exc.param or "request"
    if isinstance(exc, (DeadlineExceeded, asyncio.TimeoutError)):
        return "timeout", "deadline"
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return "cancelled", "client"
    return "error", type(exc).__name__


class RequestMeter:
    """One request seen from the orchestrator's stream: call :meth:`chunk` on every chunk it
    yields and :meth:`finish` exactly once, in a ``finally``."""

    def __init__(self, m: LookaheadMetrics, request_id: str, mode: str, verifier: str) -> None:
        self.m, self.request_id, self.mode, self.verifier = m, request_id, mode, verifier
        self.start = time.monotonic()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.first_tokens = 0
        self.prompt_tokens = 0
        self.result: dict | None = None
        self.finished = False
        m.set_active(+1)

    def chunk(self, chunk: dict) -> None:
        now = time.monotonic()
        if "prompt_tokens" in chunk:
            self.prompt_tokens = int(chunk["prompt_tokens"])
        steps = chunk.get("steps") if not chunk.get("done") else None
        if steps and any(s.get("text") for s in steps):
            if self.first_at is None:
                self.first_at = now
                self.first_tokens = sum(int(s.get("tokens") or 0) for s in steps)
            self.last_at = now
        if chunk.get("done"):
            self.result = chunk
            self.mode = chunk.get("mode") or self.mode

    def finish(self, exc: BaseException | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        m, mode = self.m, self.mode
        m.set_active(-1)
        wall = time.monotonic() - self.start
        # A stream cancelled after its final chunk went out still delivered the answer.
        status, reason = outcome_of(None if self.result is not None else exc)
        model = {MODEL: m.model_name}
        m.inc("requests_total", mode=mode, status=status)
        m.observe("e2e_request_latency_seconds", wall, **model, mode=mode, status=status)
        if status != "ok":
            m.error(status, reason)
        if status == "ok":
            finished = (self.result or {}).get("finish_reason") or "stop"
        else:
            finished = FINISHED_REASONS.get(status)
        if finished:
            m.inc("request_success_total", **model, mode=mode, finished_reason=finished)
        if self.first_at is not None:
            m.observe("time_to_first_token_seconds", self.first_at - self.start, **model, mode=mode)
        stats = (self.result or {}).get("stats") or {}
        tokens = int(stats.get("tokens") or 0)
        if self.result is not None:
            m.inc("prompt_tokens_total", self.prompt_tokens, **model, mode=mode)
            m.inc("generation_tokens_total", tokens, **model, mode=mode)
            later = tokens - self.first_tokens
            if later > 0 and self.first_at is not None and self.last_at is not None:
                m.observe("request_time_per_output_token_seconds", (self.last_at - self.first_at) / later,
                          **model, mode=mode)
            self._account(stats, self.result.get("steps") or [])
        log.info("lookahead request %s mode=%s verifier=%s status=%s%s prompt_tokens=%d tokens=%d "
                 "steps=%d/%d accepted/verified acceptance=%.3f cycles=%d wall=%.3fs ttft=%s%s",
                 self.request_id, mode, self.verifier, status, f" reason={reason}" if reason else "",
                 self.prompt_tokens, tokens, int(stats.get("accepted_steps") or 0),
                 int(stats.get("verified_steps") or 0), float(stats.get("acceptance_rate") or 0.0),
                 int(stats.get("cycles") or 0), wall,
                 "-" if self.first_at is None else f"{self.first_at - self.start:.3f}s",
                 f" degraded={','.join(_parts(stats['degraded']))}" if stats.get("degraded") else "")

    def _account(self, st: dict, steps: list[dict]) -> None:
        m, mode, verifier = self.m, self.mode, self.verifier
        m.inc("steps_total", st.get("accepted_steps", 0), mode=mode, source="draft")
        m.inc("steps_total", st.get("target_steps", 0), mode=mode, source="target")
        for depth, (n, a) in enumerate(zip(st.get("verified_by_depth") or [], st.get("accepted_by_depth") or [])):
            m.inc("draft_positions_verified_total", n, depth=depth, verifier=verifier)
            m.inc("draft_positions_accepted_total", a, depth=depth, verifier=verifier)
        if st.get("verified_steps"):
            m.observe("step_acceptance", st["accepted_steps"] / st["verified_steps"], verifier=verifier)
        for s in steps:  # accepted drafts carry the accepting verdict; target steps the rejecting one
            if s.get("verifier"):
                m.inc("verdicts_total", verifier=s["verifier"],
                      verdict="accepted" if s.get("source") == "draft" else "rejected")
        for phase in PHASES:
            m.inc("cycle_phase_seconds_total", float(st.get(f"{phase}_s") or 0.0), mode=mode, phase=phase)
        for depth, n in enumerate(st.get("depth_counts") or []):
            for _ in range(int(n)):
                m.observe("chosen_depth", depth, mode=mode)
        for part in _parts(st.get("degraded") or []):  # once per request and part, however many cycles
            m.error("degraded", part)


def _parts(degraded: list[str]) -> list[str]:
    """"draft: TimeoutError: ..." -> "draft": the part that failed (a bounded label)."""
    return sorted({str(note).split(":", 1)[0].strip() or "unknown" for note in degraded})
