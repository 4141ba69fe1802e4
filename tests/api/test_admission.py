"""The ingress's own admission and deadlines (deployments/api/admission.py, the HTTP guard), without
Ray: what it refuses, in which shape, which requests it counts and for how long, and that its
deadline ends before a proxy timeout would."""
from __future__ import annotations

import asyncio
import json

import pytest

from deployments.api.admission import Admission, Deadline, admission_limit, before_proxy, guard_s
from deployments.api.auth import ApiKeys
from deployments.api.errors import DeadlineExceeded, HTTPError
from deployments.api.http_app import GuardMiddleware


def test_the_limit_is_what_serve_would_have_held_running_and_queued():
    assert admission_limit(4, 2) == 6
    assert admission_limit(64, 0) == 64
    assert admission_limit(8, -1) is None  # -1 queued: no limit, as in Serve


def test_a_full_replica_refuses_with_an_openai_503_and_retry_after():
    adm = Admission(2)
    with adm.slot(), adm.slot():
        with pytest.raises(HTTPError) as full:
            adm.enter()
        assert adm.active == 2
    err = full.value
    assert err.status == 503 and err.headers == {"Retry-After": "1"}
    assert err.body["error"]["code"] == "overloaded" and err.body["error"]["type"] == "overloaded_error"
    assert adm.active == 0
    with adm.slot():  # the places came back
        assert adm.active == 1
    unlimited = Admission(None)
    for _ in range(1000):
        unlimited.enter()
    assert unlimited.active == 1000


@pytest.mark.parametrize("proxy_s", [0.2, 0.5, 1, 2, 5, 30, 600])
def test_the_deadline_and_its_guard_end_before_the_proxy_timeout(proxy_s):
    """The application's last word on a request (its deadline, then the guard) leaves room before
    Serve's proxy times it out: for the way to the ingress and the answer's way back."""
    kept = before_proxy(proxy_s)
    assert 0 < kept and kept + guard_s(kept) <= proxy_s - min(0.5, proxy_s / 4)


def test_the_deadline_ends_a_stream_that_outlives_it_and_only_that():
    async def run():
        async def stream(pause: float):
            for i in range(3):
                await asyncio.sleep(pause)
                yield i

        assert [i async for i in Deadline(1.0).guard(stream(0.01))] == [0, 1, 2]
        got = []
        with pytest.raises(DeadlineExceeded, match="deadline of 0.2s"):
            async for i in Deadline(0.2).guard(stream(0.15)):
                got.append(i)
        assert got == [0]

        async def own_timeout():  # a timeout of the awaited call's own, before the deadline
            raise TimeoutError("engine call took too long")

        with pytest.raises(TimeoutError, match="engine call"):
            await Deadline(30).within(own_timeout())

    asyncio.run(run())


class Held:
    """An ASGI app that answers once told to: a request the guard holds meanwhile."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope, receive, send):
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def call(app, method: str, path: str) -> tuple[int, dict, bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    await app({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_the_guard_counts_generation_requests_until_their_response_is_sent():
    async def run():
        inner = Held()
        adm = Admission(2)
        guard = GuardMiddleware(inner, ApiKeys(), 1 << 20, adm)
        held = [asyncio.create_task(call(guard, "POST", path)) for path in ("/v1/chat/completions", "/v1/completions")]
        await asyncio.sleep(0.05)
        assert adm.active == 2
        status, headers, body = await call(guard, "POST", "/v1/chat/completions")
        assert status == 503 and headers["retry-after"] == "1" and headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == "overloaded"
        # what does not generate is never counted nor refused
        others = [asyncio.create_task(call(guard, m, p)) for m, p in (("GET", "/v1/models"), ("GET", "/health"),
                                                                     ("GET", "/v1/chat/completions"))]
        await asyncio.sleep(0.05)
        assert adm.active == 2
        inner.release.set()
        assert [s for s, _, _ in await asyncio.gather(*held, *others)] == [200] * 5
        assert adm.active == 0
        # a request that fails or is cancelled gives its place back too
        inner.release.clear()
        task = asyncio.create_task(call(guard, "POST", "/v1/completions"))
        await asyncio.sleep(0.05)
        assert adm.active == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert adm.active == 0

    asyncio.run(run())
