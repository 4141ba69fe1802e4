"""RequestMeter's accounting, recorded instead of exported (the export itself, through Ray's real
metrics endpoint, is tests/serve/test_metrics_serve.py): one outcome per request however it ends,
token and latency arithmetic, degraded parts counted once, engine calls timed by outcome."""
from __future__ import annotations

import asyncio
import logging

import pytest

from deployments.api.errors import BadRequest, DeadlineExceeded
from deployments.config import ServerConfig
from deployments.serve import metrics as M
from deployments.serve.remote import RemoteEngine


class Recorded(M.LookaheadMetrics):
    """The real meter logic; the Ray metric objects replaced by a list of what they were given."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.active = 0
        self.model_name = "served-name"

    def inc(self, name, value=1.0, **tags):
        if value:
            assert M.PREFIX + name in M.SERIES and M.SERIES[M.PREFIX + name].kind == "counter"
            assert set(tags) == set(M.SERIES[M.PREFIX + name].tags), name
            self.calls.append(("inc", name, value, tuple(sorted((k, str(v)) for k, v in tags.items()))))

    def observe(self, name, value, **tags):
        assert M.SERIES[M.PREFIX + name].kind == "histogram"
        assert set(tags) == set(M.SERIES[M.PREFIX + name].tags), name
        self.calls.append(("observe", name, value, tuple(sorted((k, str(v)) for k, v in tags.items()))))

    def set_active(self, delta):
        self.active += delta

    def values(self, call, name, **tags):
        want = {(k, str(v)) for k, v in tags.items()}
        return [v for c, n, v, t in self.calls if c == call and n == name and want <= set(t)]


DONE = {"done": True, "mode": "lr", "text": "a\n\nb", "finish_reason": "stop",
        "steps": [{"text": "a\n\n", "source": "draft", "tokens": 3, "verifier": "exact", "score": 1.0},
                  {"text": "b", "source": "target", "tokens": 2, "verifier": "exact", "score": 0.0}],
        "stats": {"mode": "lr", "tokens": 5, "accepted_steps": 1, "target_steps": 1, "verified_steps": 2,
                  "verified_by_depth": [1, 1], "accepted_by_depth": [1, 0], "cycles": 2, "acceptance_rate": 0.5,
                  "draft_s": 0.2, "target_s": 0.3, "verify_s": 0.01, "wall_s": 0.6, "depth_counts": [0, 1, 1],
                  "degraded": ["draft: TimeoutError: x", "draft: TimeoutError: y", "verifier: RuntimeError: z"]}}


def run_meter(m: Recorded, chunks: list[dict], exc: BaseException | None = None) -> M.RequestMeter:
    meter = m.request("chatcmpl-1", "lr", "exact")
    assert m.active == 1
    for c in chunks:
        meter.chunk(c)
    meter.finish(exc)
    meter.finish(exc)  # a second finish (a finally reached twice) changes nothing
    assert m.active == 0
    return meter


def test_finished_request(caplog):
    m = Recorded()
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        run_meter(m, [{"prompt_tokens": 11}, {"steps": [{"text": "a\n\n", "tokens": 3}]},
                      {"steps": [{"text": "b", "tokens": 2}]}, DONE])
    assert m.values("inc", "requests_total", status="ok", mode="lr") == [1.0]
    # vLLM's request_success: the answer's finish reason, under the served model's name
    assert m.values("inc", "request_success_total", finished_reason="stop", mode="lr", model_name="served-name") == [1]
    assert m.values("inc", "prompt_tokens_total") == [11] and m.values("inc", "generation_tokens_total") == [5]
    assert m.values("inc", "draft_positions_verified_total", depth=0) == [1]
    assert m.values("inc", "draft_positions_accepted_total", depth=0) == [1]
    assert m.values("inc", "draft_positions_accepted_total", depth=1) == []  # zero: nothing recorded
    assert m.values("observe", "step_acceptance") == [0.5]
    assert m.values("inc", "verdicts_total", verdict="accepted") == [1.0]
    assert m.values("inc", "verdicts_total", verdict="rejected") == [1.0]
    assert sorted(m.values("observe", "chosen_depth")) == [1, 2]
    assert m.values("inc", "cycle_phase_seconds_total", phase="target") == [0.3]
    # degraded: once per part, however many cycles it hit
    assert m.values("inc", "errors_total", kind="degraded", reason="draft") == [1.0]
    assert m.values("inc", "errors_total", kind="degraded", reason="verifier") == [1.0]
    assert len(m.values("observe", "time_to_first_token_seconds")) == 1
    (tpot,) = m.values("observe", "request_time_per_output_token_seconds")  # 2 tokens after the first chunk's 3
    (e2e,) = m.values("observe", "e2e_request_latency_seconds", status="ok", model_name="served-name")
    assert 0 <= tpot <= e2e / 2
    (line,) = [r.getMessage() for r in caplog.records if "lookahead request" in r.getMessage()]
    assert "chatcmpl-1 mode=lr verifier=exact status=ok prompt_tokens=11 tokens=5" in line
    assert "steps=1/2 accepted/verified acceptance=0.500 cycles=2" in line and line.endswith("degraded=draft,verifier")


@pytest.mark.parametrize("exc, status, reason, finished", [
    (BadRequest("too long", "max_tokens"), "bad_request", "max_tokens", None),  # refused: never admitted
    (DeadlineExceeded("late"), "timeout", "deadline", "abort"),
    (asyncio.CancelledError(), "cancelled", "client", "abort"),
    (GeneratorExit(), "cancelled", "client", "abort"),
    (RuntimeError("boom"), "error", "RuntimeError", "error"),
])
def test_failed_request_is_counted_once_with_its_kind(exc, status, reason, finished):
    m = Recorded()
    run_meter(m, [{"prompt_tokens": 7}, {"steps": [{"text": "a", "tokens": 1}]}], exc)
    assert [n for k, n, *_ in m.calls if k == "inc" and n == "requests_total"] == ["requests_total"]
    assert m.values("inc", "requests_total", status=status) == [1.0]
    success = [t for k, n, _, t in m.calls if k == "inc" and n == "request_success_total"]
    assert success == ([] if finished is None else [(("finished_reason", finished), ("mode", "lr"),
                                                      ("model_name", "served-name"))])
    assert m.values("inc", "errors_total", kind=status, reason=reason) == [1.0]
    assert m.values("inc", "prompt_tokens_total") == []  # tokens count for finished requests only
    assert len(m.values("observe", "time_to_first_token_seconds")) == 1  # the client did see text


def test_cancelled_after_the_final_chunk_still_delivered():
    m = Recorded()
    run_meter(m, [{"prompt_tokens": 3}, {**DONE, "finish_reason": "length"}], asyncio.CancelledError())
    assert m.values("inc", "requests_total", status="ok") == [1.0]
    assert m.values("inc", "request_success_total", finished_reason="length") == [1.0]
    assert m.values("inc", "errors_total", kind="cancelled") == []


def test_refused_before_any_text_has_no_ttft():
    m = Recorded()
    run_meter(m, [], BadRequest("no", "stop"))
    assert m.values("observe", "time_to_first_token_seconds") == []
    assert m.values("inc", "errors_total", kind="bad_request", reason="stop") == [1.0]


class _Handle:
    """A DeploymentHandle stand-in whose calls finish, fail or hang (RemoteEngine's timing only)."""

    def __init__(self, behaviour):
        self.behaviour = behaviour

    def __getattr__(self, method):
        outer = self

        class _M:
            def remote(self, *args):
                return _Resp(outer.behaviour)
        return _M()


class _Resp:
    def __init__(self, behaviour):
        self.behaviour = behaviour

    def __await__(self):
        return self._run().__await__()

    async def _run(self):
        if self.behaviour == "hang":
            await asyncio.sleep(30)
        if self.behaviour == "fail":
            raise RuntimeError("engine error")
        return []

    def cancel(self):
        pass


async def test_engine_calls_are_timed_with_their_outcome():
    seen = []
    observe = lambda *a: seen.append(a)  # noqa: E731
    await RemoteEngine(_Handle("ok"), "k", role="target", observe=observe).generate_steps([])
    with pytest.raises(TimeoutError):
        await RemoteEngine(_Handle("hang"), "k", timeout_s=0.01, role="draft", observe=observe).generate_steps([])
    with pytest.raises(RuntimeError):
        await RemoteEngine(_Handle("fail"), "k", role="judge", observe=observe).choice_probs([], [])
    task = asyncio.ensure_future(RemoteEngine(_Handle("hang"), "k", role="draft", observe=observe).generate_steps([]))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(r, m, o) for r, m, _, o in seen] == [("target", "generate_steps", "ok"),
                                                   ("draft", "generate_steps", "timeout"),
                                                   ("judge", "choice_probs", "error"),
                                                   ("draft", "generate_steps", "cancelled")]
    assert all(s >= 0 for _, _, s, _ in seen)


def test_catalogue_names_are_what_ray_accepts():
    import re

    for s in M.SERIES.values():
        assert re.fullmatch(r"lookahead_[a-z0-9_]+", s.name), s.name  # no ':' (Ray drops such series)
        assert (s.kind == "counter") == s.name.endswith("_total")
        assert s.exported == "ray_" + s.name


#: our series that mean what one of vLLM's means: vLLM's name (':' -> '_', counters with _total),
#: the label vLLM puts on it besides model_name and engine, and vLLM's bucket family
VLLM_TWINS = {
    "lookahead_request_success_total": ("vllm:request_success", {"finished_reason"}, None),
    "lookahead_prompt_tokens_total": ("vllm:prompt_tokens", set(), None),
    "lookahead_generation_tokens_total": ("vllm:generation_tokens", set(), None),
    "lookahead_spec_decode_num_draft_tokens_total": ("vllm:spec_decode_num_draft_tokens", set(), None),
    "lookahead_spec_decode_num_accepted_tokens_total": ("vllm:spec_decode_num_accepted_tokens", set(), None),
    "lookahead_time_to_first_token_seconds": ("vllm:time_to_first_token_seconds", set(), "time_to_first_token"),
    "lookahead_request_time_per_output_token_seconds": ("vllm:request_time_per_output_token_seconds", set(),
                                                        "inter_token_latency"),
    "lookahead_e2e_request_latency_seconds": ("vllm:e2e_request_latency_seconds", set(), "request_latency"),
}


def test_series_vllm_also_has_carry_vllms_name_labels_and_buckets():
    """Read from the installed vLLM's sources (its metric names are string literals there) and its
    bucket defaults, so a vLLM upgrade that renames one fails here."""
    from pathlib import Path

    import vllm
    from vllm.v1.metrics import buckets

    source = "".join(p.read_text() for p in Path(vllm.__file__).parent.joinpath("v1").rglob("*.py"))
    for ours, (theirs, labels, family) in VLLM_TWINS.items():
        assert f'"{theirs}"' in source, f"vLLM has no {theirs}"
        assert ours == M.PREFIX + theirs.removeprefix("vllm:") + ("_total" if M.SERIES[ours].kind == "counter" else "")
        assert labels <= set(M.SERIES[ours].tags), ours
        if family is not None:
            assert list(M.SERIES[ours].boundaries) == list(getattr(buckets, family.upper() + "_BUCKETS")), ours
    assert '"finished_reason"' in source
    for ours in VLLM_TWINS:  # request-level ones carry vLLM's model_name; engine-level ones our role
        assert (M.MODEL if "spec_decode" not in ours else "role") in M.SERIES[ours].tags, ours
    # a first token can come as late as the longest deadline a request may have
    assert M.TTFT_BUCKETS[-1] >= ServerConfig.model_fields["request_timeout_s"].default


def test_every_series_is_a_valid_ray_metric():
    """Ray validates names, tags and bucket edges when a metric is made: make them all."""
    live = M.LookaheadMetrics()
    assert set(live.m) == set(M.SERIES)
