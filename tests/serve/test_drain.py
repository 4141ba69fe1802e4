"""An ingress replica stopping (deployments/serve/drain.py): new requests refused while those in
flight run on, and what outlives the grace period ended with the shutdown error: on a stream, an
error event and [DONE]. The end-to-end stop is tests/serve/test_signals.py."""
from __future__ import annotations

import asyncio
import json

import pytest

from deployments.api.errors import HTTPError
from deployments.serve.drain import Drain
from deployments.serve.ingress import sse_events


def test_a_draining_replica_refuses_new_requests_and_counts_those_in_flight():
    drain = Drain()
    drain.admit()
    drain.admit()
    assert drain.start() == 2
    with pytest.raises(HTTPError) as refused:
        drain.admit()
    assert refused.value.status == 503
    assert refused.value.body["error"]["code"] == "shutting_down"
    assert refused.value.headers == {"Retry-After": "1"}
    drain.done()
    assert drain.start() == 1


async def test_abort_ends_a_waiting_call_with_the_shutdown_error_and_cancels_it():
    drain = Drain()
    never = asyncio.ensure_future(asyncio.sleep(3600))
    waiting = asyncio.ensure_future(drain.race(never))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    drain.abort()
    with pytest.raises(HTTPError) as ended:
        await waiting
    assert ended.value.body["error"]["code"] == "shutting_down"
    await asyncio.sleep(0)
    assert never.cancelled()


async def test_a_stream_runs_to_its_end_while_draining():
    drain = Drain()

    async def stream():
        for i in range(3):
            yield i

    drain.admit()
    drain.start()
    assert [c async for c in drain.chunks(stream())] == [0, 1, 2]


async def test_an_aborted_stream_ends_with_an_error_event_then_done():
    drain = Drain()
    gate = asyncio.Event()

    class Orchestrator:  # a session that writes one cycle, then waits for the next one
        def __init__(self):
            self.sent = False

        def __aiter__(self):
            return self

        async def __anext__(self):
            if not self.sent:
                self.sent = True
                return {"steps": [{"text": "Step one.", "source": "target"}]}
            await gate.wait()
            raise StopAsyncIteration

        def cancel(self):
            gate.set()

    drain.admit()
    events = sse_events(Orchestrator(), "chatcmpl-1", "lookahead", True, 5, False, drain=drain)
    out = [await events.__anext__(), await events.__anext__()]  # the role chunk, the first step
    drain.abort()
    out += [e async for e in events]
    data = [e.removeprefix("data: ").strip() for e in out]
    assert json.loads(data[1])["choices"][0]["delta"]["content"] == "Step one."
    assert json.loads(data[2])["error"]["code"] == "shutting_down"
    assert data[3] == "[DONE]"
    assert drain.in_flight == 0
