"""The strict OpenAI surface through the real Ray Serve application (HTTP proxy and gRPC proxy):
the parameter policy, stop strings, the usage chunk and the error bodies hold there too, not
only in-process (tests/api/test_openai_surface.py covers every parameter; this module checks the
paths Serve's proxies add). It shares `smol_app` (SmolLM2-135M in both roles) with the other API
modules."""
from __future__ import annotations

import json

import grpc
import httpx
import openai
import pytest
from openai import OpenAI

from protos.lookahead.v1 import lookahead_pb2 as pb
from protos.lookahead.v1 import lookahead_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.serve, pytest.mark.slow]
STEPS_PROMPT = "Step 1: add 2 and 3.\n\nStep 2:"  # SmolLM2 continues it in several short steps
MSG = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def app(smol_app):
    return smol_app


def client(app) -> OpenAI:
    return OpenAI(base_url=f"{app.http}/v1", api_key="unused", max_retries=0, timeout=300)


def test_stop_across_steps_and_usage_chunk(app):
    c = client(app)
    full = c.completions.create(model="lookahead", prompt=STEPS_PROMPT, max_tokens=30, temperature=0)
    steps = [s["text"] for s in full.model_extra["lookahead"]["steps"]]
    assert len(steps) >= 2, steps
    text = "".join(steps)
    stop = text[len(steps[0]) - 3: len(steps[0]) + 3]  # straddles the first step boundary
    want = text[:text.index(stop)]
    cut = c.completions.create(model="lookahead", prompt=STEPS_PROMPT, max_tokens=30, temperature=0, stop=[stop])
    assert cut.choices[0].text == want and cut.choices[0].finish_reason == "stop"

    chunks = list(c.completions.create(model="lookahead", prompt=STEPS_PROMPT, max_tokens=30, temperature=0,
                                       stop=stop, stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == want
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0  # OpenAI's usage chunk
    orch = app.deployment("Orchestrator")
    assert orch.active_sessions.remote().result() == []  # the stop ended the session


def test_sampling_extras_and_refusals(app):
    c = client(app)
    from transformers import AutoTokenizer

    from deployments.model_cache import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    token = tok.encode(" banana")[0]
    r = c.chat.completions.create(model="lookahead", messages=MSG, max_tokens=4, temperature=0,
                                  logit_bias={str(token): 100})
    assert r.choices[0].message.content == tok.decode([token] * 4)
    seeded = [c.chat.completions.create(model="lookahead", messages=MSG, max_tokens=12, temperature=1.2, seed=9)
              .choices[0].message.content for _ in range(2)]
    assert seeded[0] == seeded[1]
    for kw, param in [({"logprobs": True}, "logprobs"), ({"n": 2}, "n"), ({"tools": [{"type": "function",
                      "function": {"name": "f"}}]}, "tools"), ({"presence_penalty": 1.0}, "presence_penalty"),
                      ({"response_format": {"type": "json_object"}}, "response_format"),
                      ({"extra_body": {"frobnicate": 1}}, "frobnicate")]:
        with pytest.raises(openai.BadRequestError) as err:
            c.chat.completions.create(model="lookahead", messages=MSG, max_tokens=4, **kw)
        assert err.value.body["param"] == param
    assert c.models.retrieve("lookahead").id == "lookahead"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-17")


@pytest.mark.parametrize("method, path, body, status, code", [
    ("POST", "/v1/chat/completions", b'{"model": "\xff\xfe"}', 400, "invalid_json"),  # not UTF-8
    ("POST", "/v1/chat/completions", b'{"model": ', 400, "invalid_json"),
    ("POST", "/v1/chat/completions", b'[1]', 400, None),
    ("GET", "/v1/nothing", None, 404, "unknown_url"),
    ("GET", "/v1/chat/completions", None, 405, "method_not_allowed"),
    ("GET", "/v1/models/gpt-17", None, 404, "model_not_found"),
])
def test_error_bodies_through_the_proxy(app, method, path, body, status, code):
    r = httpx.request(method, f"{app.http}{path}", content=body, headers={"content-type": "application/json"},
                      timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["code"] == code


def test_grpc_stop_seed_and_codes(app):
    with grpc.insecure_channel(app.grpc) as channel:
        stub = pb_grpc.LookaheadServiceStub(channel)
        base = stub.Generate(pb.GenerateRequest(prompt=STEPS_PROMPT, max_tokens=30, temperature=0.0), timeout=300)
        stop = base.text[4:7]
        cut = stub.Generate(pb.GenerateRequest(prompt=STEPS_PROMPT, max_tokens=30, temperature=0.0, stop=[stop]),
                            timeout=300)
        assert cut.text == base.text[:base.text.index(stop)] and cut.finish_reason == "stop"
        chunks = list(stub.GenerateStream(pb.GenerateRequest(prompt=STEPS_PROMPT, max_tokens=30, temperature=0.0,
                                                             stop=[stop]), timeout=300))
        assert "".join(s.text for ch in chunks for s in ch.steps) == cut.text and chunks[-1].finish_reason == "stop"
        seeded = {stub.Generate(pb.GenerateRequest(prompt=STEPS_PROMPT, max_tokens=12, temperature=1.2, seed=3),
                                timeout=300).text for _ in range(2)}
        assert len(seeded) == 1
        for bad, code in [(pb.GenerateRequest(prompt="x", model="gpt-17"), grpc.StatusCode.NOT_FOUND),
                          (pb.GenerateRequest(prompt="x", stop=[""]), grpc.StatusCode.INVALID_ARGUMENT)]:
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(bad, timeout=60)
            assert err.value.code() == code, err.value.details()


def test_stream_events_are_json_to_the_end(app):
    """Raw SSE as a client without the SDK sees it: role chunk, content chunks, the finish chunk,
    the usage chunk with empty choices, then [DONE]."""
    body = {"model": "lookahead", "messages": MSG, "max_tokens": 8, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{app.http}/v1/chat/completions", json=body, timeout=300) as r:
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(x) for x in data[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
