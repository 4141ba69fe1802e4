"""The OpenAI surface, parameter by parameter: every field of the openai package's own chat and
completions request types is either honoured (and shown to change the output as it should) or
refused with a 400 whose `param` names it. Plus every error path's body, and the gRPC mapping.

Runs the application's own Ingress, Orchestrator and engine deployment classes in this process
(tests/support/local_app.py) with SmolLM2-135M as target and draft: the real request path, in seconds.
"""
from __future__ import annotations

import json
import logging
from typing import Awaitable, Callable, NamedTuple

import httpx
import pytest
import pytest_asyncio
from openai.types import completion_create_params as completion_params
from openai.types.chat import completion_create_params as chat_params

from deployments.api import openai_api as oa
from deployments.config import AppConfig, LookaheadDefaults, RoleConfig
from tests.support.engines import hf_config
from tests.support.local_app import LocalApp

pytestmark = pytest.mark.slow
LOOP = pytest.mark.asyncio(loop_scope="module")  # one event loop for the module's app and clients

MODEL = "smollm2-135m"
QUESTION = "Name three colours."
MSG = [{"role": "user", "content": QUESTION}]
# a raw prompt SmolLM2 continues in several short steps ("\n\n"-delimited)
STEPS_PROMPT = "Step 1: add 2 and 3.\n\nStep 2:"
CHAT_FIELDS = sorted(chat_params.CompletionCreateParamsBase.__annotations__)
COMPLETION_FIELDS = sorted(completion_params.CompletionCreateParamsBase.__annotations__)
# vLLM's extras this server also takes (not in the openai package's types)
EXTRAS = ["top_k", "min_p", "repetition_penalty", "chat_template_kwargs", "ignore_eos", "min_tokens",
          "stop_token_ids", "skip_special_tokens", "include_stop_str_in_output", "add_generation_prompt",
          "continue_final_message"]
# a question SmolLM2 answers in a few tokens and then ends (EOS) well before SHORT_BUDGET
SHORT = [{"role": "user", "content": "Say OK."}]
SHORT_BUDGET = 40


@pytest.fixture(scope="module")
def app(engines):
    role = RoleConfig(engine=hf_config(MODEL))
    # "ar" by default keeps this module fast; the tests about steps and speculation ask for "lr"
    cfg = AppConfig(target=role, draft=role, defaults=LookaheadDefaults(mode="ar", depth=2, max_tokens=16))
    engine = engines.deployment(role.engine, role="TargetEngine")
    return LocalApp(cfg, engines={"target": engine, "draft": engine})  # one model in both roles


@pytest.fixture(scope="module")
def tokenizer(app):
    return app.engines["target"].engine.tokenizer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(app):
    async with app.http(timeout=300) as client:
        yield client


async def chat(http, **kw) -> httpx.Response:
    return await http.post("/v1/chat/completions", json={"model": "lookahead", "messages": MSG, "max_tokens": 16,
                                                         "temperature": 0, **kw})


async def complete(http, **kw) -> httpx.Response:
    return await http.post("/v1/completions", json={"model": "lookahead", "prompt": "The capital of France is",
                                                    "max_tokens": 8, "temperature": 0, **kw})


def text_of(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


def events(r: httpx.Response) -> list:
    assert r.status_code == 200, r.text
    lines = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def baseline(http) -> str:
    """The greedy answer every neutral parameter must leave as it is."""
    return text_of(await chat(http))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def completion_baseline(http) -> str:
    return text_of(await complete(http))


def assert_refused(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    assert err["type"] == "invalid_request_error" and err["message"], err


# -- honoured parameters: each check shows the parameter doing what it says ------------------

async def _model(t):
    http, base, tok, app, _name = t
    assert text_of(await chat(http, model="lookahead")) == base
    r = await chat(http, model="gpt-17")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


async def _messages(t):
    http, base, tok, app, _name = t
    parts = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    assert text_of(await chat(http, messages=parts)) == base  # text parts are the same message
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    r = await chat(http, messages=[{"role": "user", "content": [parts[0]["content"][0], image]}])
    assert_refused(r, "messages.0.content.1")


async def _max_tokens(t, name="max_tokens"):
    http, base, tok, app, _name = t
    r = await chat(http, **{"max_tokens": None, name: 3})
    body = r.json()
    assert body["usage"]["completion_tokens"] == 3 and body["choices"][0]["finish_reason"] == "length"
    assert base.startswith(text_of(r))


async def _max_completion_tokens(t):
    await _max_tokens(t, "max_completion_tokens")


async def _temperature(t):
    http, base, tok, app, _name = t
    hot = [text_of(await chat(http, temperature=1.5, seed=s)) for s in (1, 2, 3)]
    assert len(set(hot)) > 1 and any(x != base for x in hot)  # sampling, not greedy
    assert text_of(await chat(http, temperature=1.5, seed=1)) == hot[0]


async def _top_p(t):
    http, base, tok, app, _name = t
    # a nucleus this small keeps only the most likely token: greedy again
    assert text_of(await chat(http, temperature=1.5, seed=1, top_p=1e-6)) == base
    assert text_of(await chat(http, temperature=1.5, seed=1)) != base


async def _top_k(t):
    http, base, tok, app, _name = t
    assert text_of(await chat(http, temperature=1.5, seed=1, top_k=1)) == base
    # vLLM's -1: no top-k, the same draw as leaving it out
    assert text_of(await chat(http, temperature=1.5, seed=1, top_k=-1)) == text_of(await chat(http, temperature=1.5,
                                                                                               seed=1))
    assert_refused(await chat(http, top_k=-2), "top_k")


async def short_answer(http, **kw) -> dict:
    r = await chat(http, messages=SHORT, max_tokens=SHORT_BUDGET, **kw)
    assert r.status_code == 200, r.text
    return r.json()


async def _ignore_eos(t):
    http, base, tok, app, _name = t
    plain = await short_answer(http)
    assert plain["choices"][0]["finish_reason"] == "stop"  # the model ends it (EOS) ...
    assert plain["usage"]["completion_tokens"] < SHORT_BUDGET // 2
    for mode in ("ar", "lr"):  # ... and with ignore_eos runs on to max_tokens, speculating or not
        long = await short_answer(http, ignore_eos=True, lookahead={"mode": mode})
        assert long["choices"][0]["finish_reason"] == "length"
        assert long["usage"]["completion_tokens"] == SHORT_BUDGET
        assert long["choices"][0]["message"]["content"].startswith(plain["choices"][0]["message"]["content"])


async def _min_tokens(t):
    http, base, tok, app, _name = t
    plain = await short_answer(http)
    n = plain["usage"]["completion_tokens"]
    text = plain["choices"][0]["message"]["content"]
    assert (await short_answer(http, min_tokens=n))["choices"][0]["message"]["content"] == text  # already long enough
    held = {}
    for mode in ("ar", "lr"):
        r = await short_answer(http, min_tokens=n + 10, lookahead={"mode": mode, "depth": 2})
        assert r["usage"]["completion_tokens"] >= n + 10  # EOS held off until then
        held[mode] = r["choices"][0]["message"]["content"]
        assert held[mode].startswith(text) and len(held[mode]) > len(text)
    assert held["lr"] == held["ar"]  # step speculation leaves the greedy answer as it is
    assert_refused(await chat(http, min_tokens=17, max_tokens=16), "min_tokens")
    assert_refused(await chat(http, max_tokens=None, min_tokens=17), "min_tokens")  # over the default max_tokens (16)


async def _stop_token_ids(t):
    http, base, tok, app, _name = t
    ids = tok.encode(base)
    token = ids[3]
    r = await chat(http, stop_token_ids=[token])
    cut = text_of(r)
    assert r.json()["choices"][0]["finish_reason"] == "stop"
    assert base.startswith(cut) and len(cut) < len(base)
    kept = text_of(await chat(http, stop_token_ids=[token], include_stop_str_in_output=True))
    assert kept == cut + tok.decode([token])  # the stop token's text, kept on request
    lr = text_of(await chat(http, stop_token_ids=[token], lookahead={"mode": "lr", "depth": 2}))
    assert lr == cut
    assert_refused(await chat(http, stop_token_ids=[10**7]), "stop_token_ids")  # not a token of the target


async def _include_stop_str_in_output(t):
    http, base, tok, app, _name = t
    stop = base[len(base) // 2: len(base) // 2 + 3]
    r = await chat(http, stop=[stop], include_stop_str_in_output=True)
    assert text_of(r) == base[:base.index(stop) + len(stop)] and r.json()["choices"][0]["finish_reason"] == "stop"
    assert text_of(await chat(http, include_stop_str_in_output=True)) == base  # nothing to include


async def _skip_special_tokens(t):
    http, base, tok, app, _name = t
    eos = [tok.decode([e]) for e in app.engines["target"].engine.eos_ids]
    shown = (await short_answer(http, ignore_eos=True, skip_special_tokens=False))["choices"][0]["message"]["content"]
    hidden = (await short_answer(http, ignore_eos=True))["choices"][0]["message"]["content"]
    # the EOS the answer ran past, as text only when asked
    assert any(e in shown for e in eos) and not any(e in hidden for e in eos), (shown, hidden)
    assert text_of(await chat(http, skip_special_tokens=False)) == base  # no special token in it


async def _add_generation_prompt(t):
    http, base, tok, app, _name = t
    with_turn = (await chat(http)).json()["usage"]["prompt_tokens"]
    bare = await chat(http, add_generation_prompt=False)
    rendered = tok.encode(tok.apply_chat_template(MSG, add_generation_prompt=False, tokenize=False),
                          add_special_tokens=False)
    assert bare.json()["usage"]["prompt_tokens"] == len(rendered) < with_turn  # no assistant turn opened


async def _continue_final_message(t):
    http, base, tok, app, _name = t
    msgs = MSG + [{"role": "assistant", "content": "My three colours are"}]
    r = await chat(http, messages=msgs, continue_final_message=True)
    rendered = tok.encode(tok.apply_chat_template(msgs, continue_final_message=True, tokenize=False),
                          add_special_tokens=False)
    assert r.json()["usage"]["prompt_tokens"] == len(rendered)  # the last message left open
    assert text_of(r) != base
    assert_refused(await chat(http, continue_final_message=True), "continue_final_message")  # user message last
    assert_refused(await chat(http, messages=msgs, continue_final_message=True, add_generation_prompt=True),
                   "continue_final_message")


async def _min_p(t):
    http, base, tok, app, _name = t
    # min_p = 1 keeps only tokens as likely as the most likely one: greedy again
    assert text_of(await chat(http, temperature=1.5, seed=1, min_p=1.0)) == base


async def _seed(t):
    http, base, tok, app, _name = t
    a = [text_of(await chat(http, temperature=1.2, seed=s)) for s in (11, 11, 12)]
    assert a[0] == a[1] != a[2]  # a seed reproduces; another seed differs
    # any int64, negative too (mapped into the engines' range)
    b = [text_of(await chat(http, temperature=1.2, seed=s)) for s in (-7, -7, 2**62)]
    assert b[0] == b[1] and b[2]
    assert_refused(await chat(http, seed=2**63), "seed")
    unseeded = {text_of(await chat(http, temperature=1.2)) for _ in range(2)}
    assert len(unseeded) == 2  # no seed: fresh randomness per request


async def _stop(t):
    http, base, tok, app, _name = t
    stop = base[len(base) // 2: len(base) // 2 + 3]
    r = await chat(http, stop=[stop, "never-in-the-text"])
    assert text_of(r) == base[:base.index(stop)]
    assert r.json()["choices"][0]["finish_reason"] == "stop"
    r = await chat(http, stop=stop)  # a plain string too
    assert text_of(r) == base[:base.index(stop)]
    assert_refused(await chat(http, stop=[""]), "stop")


async def _stream(t):
    http, base, tok, app, _name = t
    chunks = events(await chat(http, stream=True))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == base
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


async def _stream_options(t):
    http, base, tok, app, _name = t
    chunks = events(await chat(http, stream=True, stream_options={"include_usage": True}))
    *body, last = chunks
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0  # OpenAI's usage chunk
    assert body[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all("usage" not in c for c in body)
    assert "usage" not in events(await chat(http, stream=True))[-1]
    assert_refused(await chat(http, stream_options={"include_usage": True}), "stream_options")  # not streaming


async def _logit_bias(t):
    http, base, tok, app, _name = t
    token = tok.encode(" banana")[0]
    forced = text_of(await chat(http, logit_bias={str(token): 100}, max_tokens=5))
    assert forced == tok.decode([token] * 5)  # +100 makes it the greedy choice at every position
    first = tok.encode(base)[0]
    banned = text_of(await chat(http, logit_bias={str(first): -100}))
    assert tok.encode(banned)[0] != first
    assert (await chat(http, logit_bias={str(10**7): 5})).json()["error"]["param"] == "logit_bias"  # not a token
    assert (await chat(http, logit_bias={"x": 5})).status_code == 400


async def _repetition_penalty(t):
    http, base, tok, app, _name = t
    # the definition: transformers' own greedy decoding with its repetition penalty processor
    import torch

    engine = app.engines["target"].engine
    prompt = "one two one two one two one two"
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        ref = engine.model.generate(ids, max_new_tokens=8, do_sample=False, repetition_penalty=1.5,
                                    attention_mask=torch.ones_like(ids), pad_token_id=engine.pad_id)
    want = tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
    got = text_of(await http.post("/v1/completions", json={
        "model": "lookahead", "prompt": prompt, "max_tokens": 8, "temperature": 0, "repetition_penalty": 1.5,
        "lookahead": {"mode": "ar"}}))
    plain = text_of(await http.post("/v1/completions", json={
        "model": "lookahead", "prompt": prompt, "max_tokens": 8, "temperature": 0, "lookahead": {"mode": "ar"}}))
    assert got == want and got != plain


async def _chat_template_kwargs(t):
    http, base, tok, app, _name = t
    seen = []
    engine = app.engines["target"].engine
    original = engine.generate_steps

    async def spy(requests):
        seen.extend(r.prompt.chat_template_kwargs for r in requests)
        return await original(requests)

    engine.generate_steps = spy
    try:
        r = await chat(http, chat_template_kwargs={"enable_thinking": False})
    finally:
        engine.generate_steps = original
    assert text_of(r) == base  # SmolLM2's template has no thinking switch
    assert seen and all(k == {"enable_thinking": False} for k in seen)  # it reached the engine's renderer
    assert_refused(await chat(http, chat_template_kwargs={"add_generation_prompt": False}), "chat_template_kwargs")


async def _n(t):
    http, base, tok, app, _name = t
    assert text_of(await chat(http, n=1)) == base
    assert_refused(await chat(http, n=2), "n")


def refused(value, neutral=None) -> Callable:
    async def check(t):
        http, base, tok, app, _name = t
        assert_refused(await chat(http, **{_name: value}), _name)
        if neutral is not None:
            assert text_of(await chat(http, **{_name: neutral[0]})) == base
    return check


def metadata(value) -> Callable:
    async def check(t):
        http, base, tok, app, _name = t
        assert text_of(await chat(http, **{_name: value})) == base  # accepted, output unchanged
    return check


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
CHAT_CASES: dict[str, Callable[..., Awaitable]] = {
    "model": _model, "messages": _messages, "max_tokens": _max_tokens,
    "max_completion_tokens": _max_completion_tokens, "temperature": _temperature, "top_p": _top_p,
    "seed": _seed, "stop": _stop, "stream_options": _stream_options, "logit_bias": _logit_bias, "n": _n,
    "logprobs": refused(True, neutral=[False]),
    "top_logprobs": refused(3),
    "tools": refused([TOOL], neutral=[[]]),
    "tool_choice": refused("auto", neutral=["none"]),
    "functions": refused([TOOL["function"]]),
    "function_call": refused("auto", neutral=["none"]),
    "response_format": refused({"type": "json_object"}, neutral=[{"type": "text"}]),
    "audio": refused({"voice": "alloy", "format": "wav"}),
    "modalities": refused(["text", "audio"], neutral=[["text"]]),
    "prediction": refused({"type": "content", "content": "x"}),
    "web_search_options": refused({}),
    "reasoning_effort": refused("low"),
    "verbosity": refused("low"),
    "moderation": refused({"model": "omni-moderation-latest"}),
    "presence_penalty": refused(0.5, neutral=[0]),
    "frequency_penalty": refused(0.5, neutral=[0]),
    "parallel_tool_calls": metadata(False),
    "user": metadata("u-1"),
    "safety_identifier": metadata("s-1"),
    "metadata": metadata({"k": "v"}),
    "store": metadata(True),
    "service_tier": metadata("default"),
    "prompt_cache_key": metadata("k"),
    "prompt_cache_retention": metadata("24h"),
    "prompt_cache_options": metadata({}),
    # vLLM extras and the streaming flag
    "top_k": _top_k, "min_p": _min_p, "repetition_penalty": _repetition_penalty,
    "chat_template_kwargs": _chat_template_kwargs, "stream": _stream,
    "ignore_eos": _ignore_eos, "min_tokens": _min_tokens, "stop_token_ids": _stop_token_ids,
    "skip_special_tokens": _skip_special_tokens, "include_stop_str_in_output": _include_stop_str_in_output,
    "add_generation_prompt": _add_generation_prompt, "continue_final_message": _continue_final_message,
}


def test_every_request_field_is_declared_and_has_a_case():
    """Nothing in the openai package's request types can be silently dropped: each field is a
    declared field of our models (unknown ones are refused), and this module tests each."""
    for fields, model in ((CHAT_FIELDS, oa.ChatCompletionRequest), (COMPLETION_FIELDS, oa.CompletionRequest)):
        missing = [f for f in fields if f not in model.model_fields]
        assert not missing, f"{model.__name__} does not declare {missing}"
    assert sorted(set(CHAT_FIELDS) | set(EXTRAS) | {"stream"}) == sorted(CHAT_CASES)
    assert sorted(set(COMPLETION_FIELDS) - set(CHAT_FIELDS)) == sorted(COMPLETION_ONLY)
    for name, (neutral, reason) in oa.REFUSED.items():
        assert reason and callable(neutral), name


class Case(NamedTuple):
    http: httpx.AsyncClient
    base: str  # the greedy baseline answer
    tok: object
    app: LocalApp
    name: str


@pytest.mark.parametrize("name", sorted(CHAT_CASES))
@LOOP
async def test_chat_parameter(name, app, http, baseline, tokenizer):
    await CHAT_CASES[name](Case(http, baseline, tokenizer, app, name))


# -- completions: the shared fields behave as in chat; these are its own ---------------------

async def _prompt(http, base):
    assert text_of(await complete(http, prompt=["The capital of France is"])) == base  # a list of one
    for batch in (["a", "b"], [1, 2, 3], [[1, 2]]):
        assert_refused(await complete(http, prompt=batch), "prompt")


async def _echo(http, base):
    assert text_of(await complete(http, echo=True)) == "The capital of France is" + base
    chunks = events(await complete(http, echo=True, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == "The capital of France is" + base


COMPLETION_ONLY = {
    "prompt": _prompt, "echo": _echo,
    "best_of": ("refused", 2), "suffix": ("refused", " and so on"),
}


@pytest.mark.parametrize("name", sorted(set(COMPLETION_FIELDS) - set(COMPLETION_ONLY)))
@LOOP
async def test_completion_shares_chat_policy(name, http, completion_baseline, tokenizer):
    """Fields both endpoints have: refused ones are refused here too, honoured ones honoured."""
    if name in oa.REFUSED or name == "logprobs":
        value = {"logprobs": 0, "n": 2}.get(name, 0.5)
        assert_refused(await complete(http, **{name: value}), name)
    elif name in oa.IGNORED_METADATA:
        assert text_of(await complete(http, **{name: {"metadata": {"k": "v"}}.get(name, "x")})) == completion_baseline
    elif name == "stop":
        stop = completion_baseline[2:5]
        r = await complete(http, stop=stop)
        assert text_of(r) == completion_baseline[:completion_baseline.index(stop)]
        assert r.json()["choices"][0]["finish_reason"] == "stop"
    elif name == "seed":
        a, b = [text_of(await complete(http, temperature=1.2, seed=5)) for _ in range(2)]
        assert a == b
    elif name == "logit_bias":
        token = tokenizer.encode(" banana")[0]
        assert text_of(await complete(http, logit_bias={str(token): 100}, max_tokens=2)) == tokenizer.decode([token] * 2)
    elif name == "max_tokens":
        assert (await complete(http, max_tokens=2)).json()["usage"]["completion_tokens"] == 2
    elif name == "stream_options":
        assert events(await complete(http, stream=True, stream_options={"include_usage": True}))[-1]["choices"] == []
    else:
        assert name in ("model", "prompt", "temperature", "top_p"), f"no check for completions field {name}"
        assert text_of(await complete(http, **{name: {"model": "lookahead", "temperature": 0,
                                                       "top_p": 1.0}[name]})) == completion_baseline


@pytest.mark.parametrize("name", sorted(COMPLETION_ONLY))
@LOOP
async def test_completion_parameter(name, http, completion_baseline):
    case = COMPLETION_ONLY[name]
    if isinstance(case, tuple):
        assert_refused(await complete(http, **{name: case[1]}), name)
    else:
        await case(http, completion_baseline)


@LOOP
async def test_unknown_parameter_is_refused(http):
    r = await chat(http, frobnicate=1)
    assert_refused(r, "frobnicate")
    assert "Unrecognized request argument" in r.json()["error"]["message"]
    r = await chat(http, messages=[{"role": "user", "content": "hi", "tool_calls": [{"id": "1"}]}])
    assert_refused(r, "messages.0.tool_calls")
    assert_refused(await chat(http, lookahead={"depth": 99}), "lookahead.depth")  # a union field: its own name
    assert_refused(await chat(http, messages=[{"role": "user", "content": 5}]), "messages.0.content")


# -- stop strings across step boundaries, and the session they end ------------------------------

@LOOP
async def test_stop_across_a_step_boundary_cuts_and_ends_the_session(app, http):
    body = {"model": "lookahead", "prompt": STEPS_PROMPT, "max_tokens": 30, "temperature": 0,
            "lookahead": {"mode": "lr"}}
    full = (await http.post("/v1/completions", json=body)).json()
    steps = [s["text"] for s in full["lookahead"]["steps"]]
    assert len(steps) >= 2, steps
    text = "".join(steps)
    boundary = len(steps[0])
    stop = text[boundary - 3: boundary + 3]  # straddles the first step boundary
    want = text[:text.index(stop)]
    assert len(want) < boundary
    r = await http.post("/v1/completions", json={**body, "stop": [stop]})
    assert text_of(r) == want and r.json()["choices"][0]["finish_reason"] == "stop"
    chunks = events(await http.post("/v1/completions", json={**body, "stop": [stop], "stream": True}))
    assert "".join(c["choices"][0]["text"] for c in chunks) == want
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert app.orchestrator.sessions == {}  # the session was closed, nothing in flight


# -- the openai SDK itself ------------------------------------------------------------------

@LOOP
async def test_openai_sdk_chat_stream_usage_and_model_retrieve(app, baseline):
    async with app.http(timeout=300) as h:
        client = app.openai(http_client=h)
        stream = await client.chat.completions.create(model="lookahead", messages=MSG, max_tokens=16, temperature=0,
                                                      stream=True, stream_options={"include_usage": True},
                                                      extra_body={"lookahead": {"mode": "lr"}})
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == baseline
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
        assert chunks[-1].usage.model_extra["lookahead"]["mode"] == "lr"  # speculative, and equal to greedy ar
        r = await client.chat.completions.create(model="lookahead", messages=MSG, max_tokens=16, temperature=0,
                                                 stop=[baseline[4:7]])
        assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == baseline[:baseline.index(baseline[4:7])]
        card = await client.models.retrieve("lookahead")
        assert card.id == "lookahead"
        import openai

        with pytest.raises(openai.NotFoundError) as err:
            await client.models.retrieve("gpt-17")
        assert err.value.body["code"] == "model_not_found"
        with pytest.raises(openai.BadRequestError) as err:
            await client.chat.completions.create(model="lookahead", messages=MSG, logprobs=True)
        assert err.value.body["param"] == "logprobs"


# -- every error has an OpenAI body --------------------------------------------------------

def assert_error_body(r: httpx.Response, status: int, type_: str = "invalid_request_error") -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["type"] == type_, err
    return err


@pytest.mark.parametrize("raw, code", [
    (b'{"model": "lookahead", "messages": [', "invalid_json"),
    (b'{"model": "\xff\xfe"}', "invalid_json"),  # not UTF-8
    (b'\xff\xfe{"model": "\xff"}', "invalid_json"),
    (b'[1, 2, 3]', None),
    (b'"just a string"', None),
])
@LOOP
async def test_bad_bodies_get_openai_errors(http, raw, code):
    r = await http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    err = assert_error_body(r, 400)
    assert err["code"] == code


@LOOP
async def test_routes_and_methods(http):
    assert assert_error_body(await http.get("/v1/nothing"), 404)["code"] == "unknown_url"
    assert assert_error_body(await http.post("/v2/chat/completions", json={}), 404)["code"] == "unknown_url"
    r = await http.get("/v1/chat/completions")
    assert assert_error_body(r, 405)["code"] == "method_not_allowed" and r.headers["allow"] == "POST"
    assert_error_body(await http.delete("/v1/models"), 405)
    assert assert_error_body(await http.get("/v1/models/gpt-17"), 404)["code"] == "model_not_found"
    assert (await http.get("/v1/models/lookahead")).json()["id"] == "lookahead"
    assert (await http.get(f"/v1/models/{MODEL}")).json()["id"] == MODEL  # the target's own name too


@LOOP
async def test_chunked_body_over_the_limit_is_413(http):
    async def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = await http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert assert_error_body(r, 413)["code"] == "body_too_large"


@LOOP
async def test_unexpected_errors_are_500_server_error_without_details(app, http, caplog):
    engine = app.engines["target"].engine
    original = engine.generate_steps

    async def broken(requests):
        raise RuntimeError("secret internal detail")

    caplog.set_level(logging.ERROR, logger="ray.serve")
    engine.generate_steps = broken
    try:
        r = await chat(http, lookahead={"mode": "ar"})
    finally:
        engine.generate_steps = original
    err = assert_error_body(r, 500, "server_error")
    assert "secret" not in r.text and "Traceback" not in r.text and err["code"] == "internal_error"
    error_id = err["message"].split("error id ")[1].split(";")[0]
    assert any(error_id in rec.getMessage() and rec.exc_info for rec in caplog.records)  # logged, traceback too

    orch = app.orchestrator
    original_stats = orch.stats

    async def stats_broken():
        raise KeyError("secret key")

    orch.stats = stats_broken
    try:
        r = await http.get("/v1/lookahead/stats")
    finally:
        orch.stats = original_stats
    assert_error_body(r, 500, "server_error")
    assert "secret" not in r.text


@pytest.mark.parametrize("fail_from_call", [1, 2])
@LOOP
async def test_failure_in_a_stream_ends_with_an_error_event(app, http, fail_from_call):
    """Once the stream has started (its first event goes out before the first cycle ends), a
    failure ends it with an OpenAI error event (no details), then [DONE], as vLLM ends one."""
    engine = app.engines["target"].engine
    original = engine.generate_steps
    calls = 0

    async def fails(requests):
        nonlocal calls
        calls += 1
        if calls >= fail_from_call:
            raise RuntimeError("secret mid-stream detail")
        return await original(requests)

    engine.generate_steps = fails
    try:
        r = await http.post("/v1/completions", json={
            "model": "lookahead", "prompt": STEPS_PROMPT, "max_tokens": 30, "temperature": 0, "stream": True})
    finally:
        engine.generate_steps = original
    assert r.status_code == 200
    data = [x[6:] for x in r.text.splitlines() if x.startswith("data: ")]
    assert data[-1] == "[DONE]" and data.count("[DONE]") == 1
    last = json.loads(data[-2])
    assert last["error"]["type"] == "server_error" and "secret" not in r.text
    if fail_from_call == 2:
        assert any(json.loads(x)["choices"][0]["text"] for x in data[:-2])  # the first step went out
    assert app.orchestrator.sessions == {}


# -- gRPC: the same request and error mapping, status codes instead of HTTP ----------------------

class Context:
    """The parts of a gRPC servicer context the Ingress uses."""

    def __init__(self, metadata=()) -> None:
        self.metadata, self.code, self.details = tuple(metadata), None, None

    def invocation_metadata(self):
        return self.metadata

    def set_code(self, code) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


async def failed_stream(stream) -> list:
    """The chunks of a GenerateStream that fails: it ends by raising, its status set on the context
    (so that Serve's gRPC proxy sends that status)."""
    from deployments.api.grpc_api import StreamFailed

    chunks = []
    with pytest.raises(StreamFailed):
        async for c in stream:
            chunks.append(c)
    return chunks


@LOOP
async def test_grpc_stop_seed_and_status_codes(app, baseline):
    import grpc
    from google.protobuf import struct_pb2

    from protos.lookahead.v1 import lookahead_pb2 as pb

    ingress = app.ingress

    def req(**kw):
        kw = {"max_tokens": 16, "temperature": 0.0, **kw}
        return pb.GenerateRequest(messages=[pb.ChatMessage(role="user", content=QUESTION)], **kw)

    ctx = Context()
    plain = await ingress.Generate(req(lookahead=pb.LookaheadOptions(mode="lr")), ctx)
    assert ctx.code is None and plain.text == baseline  # the same answer as over HTTP
    stop = baseline[len(baseline) // 2: len(baseline) // 2 + 3]
    cut = await ingress.Generate(req(stop=[stop]), Context())
    assert cut.text == baseline[:baseline.index(stop)] and cut.finish_reason == "stop"
    chunks = [c async for c in ingress.GenerateStream(req(stop=[stop]), Context())]
    assert "".join(s.text for c in chunks for s in c.steps) == cut.text and chunks[-1].finish_reason == "stop"
    seeded = [(await ingress.Generate(req(temperature=1.2, seed=s), Context())).text for s in (4, 4)]
    assert seeded[0] == seeded[1]
    kwargs = struct_pb2.Struct()
    kwargs.update({"enable_thinking": False})
    assert (await ingress.Generate(req(chat_template_kwargs=kwargs), Context())).text == baseline

    for bad, code, word in [
        (req(model="gpt-17"), grpc.StatusCode.NOT_FOUND, "gpt-17"),
        (req(stop=[""]), grpc.StatusCode.INVALID_ARGUMENT, "stop"),
        (req(temperature=-1.0), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        (req(logit_bias={10**7: 1.0}), grpc.StatusCode.INVALID_ARGUMENT, "logit_bias"),
        (pb.GenerateRequest(prompt="x", chat_template_kwargs=kwargs), grpc.StatusCode.INVALID_ARGUMENT,
         "chat_template_kwargs"),
        (pb.GenerateRequest(), grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
    ]:
        for rpc in ("Generate", "GenerateStream"):
            ctx = Context()
            if rpc == "Generate":
                await ingress.Generate(bad, ctx)
            else:
                assert await failed_stream(ingress.GenerateStream(bad, ctx)) == []
            assert ctx.code == code and word in ctx.details, (rpc, ctx.code, ctx.details)

    engine = app.engines["target"].engine
    original = engine.generate_steps

    async def broken(requests):
        raise RuntimeError("secret internal detail")

    engine.generate_steps = broken
    try:
        for rpc in ("Generate", "GenerateStream"):
            ctx = Context()
            if rpc == "Generate":
                await ingress.Generate(req(), ctx)
            else:
                await failed_stream(ingress.GenerateStream(req(), ctx))
            assert ctx.code == grpc.StatusCode.INTERNAL and "secret" not in ctx.details and "error id" in ctx.details
    finally:
        engine.generate_steps = original


@LOOP
async def test_every_option_reaches_the_session_alike_over_http_and_grpc(app, http):
    """One request with every per-request option set, once over each protocol: the sessions the
    orchestrator opens get the same parameters, prompt and verifier."""
    from google.protobuf import struct_pb2

    from protos.lookahead.v1 import lookahead_pb2 as pb

    options = {"mode": "lr", "depth": 1, "width": 2, "schedule": "async", "verifier": "normalized",
               "max_step_tokens": 8}
    sampling = {"max_tokens": 4, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "seed": 11,
                "repetition_penalty": 1.1, "min_p": 0.05}
    orchestrator = app.orchestrator
    opened, original = [], orchestrator._session

    async def spy(spec):
        session, *rest = await original(spec)
        opened.append(session)
        return (session, *rest)

    orchestrator._session = spy
    try:
        r = await chat(http, **sampling, lookahead=options, logit_bias={"17": 2.5}, stop=["END"],
                       chat_template_kwargs={"enable_thinking": False})
        assert r.status_code == 200, r.text
        kwargs = struct_pb2.Struct()
        kwargs.update({"enable_thinking": False})
        ctx = Context()
        await app.ingress.Generate(pb.GenerateRequest(
            model="lookahead", messages=[pb.ChatMessage(**m) for m in MSG], **sampling,
            lookahead=pb.LookaheadOptions(**options), logit_bias={17: 2.5}, stop=["END"],
            chat_template_kwargs=kwargs), ctx)
        assert ctx.code is None, ctx.details
    finally:
        del orchestrator._session
    over_http, over_grpc = opened
    assert over_http.params == over_grpc.params
    assert over_http.params.target_sampling.logit_bias == ((17, 2.5),) and over_http.params.width == 2
    assert over_http.params.max_step_tokens == 8
    assert over_http.prompt == over_grpc.prompt
    assert over_http.verifier.name == over_grpc.verifier.name == "normalized"
    assert over_http.stats.mode == over_grpc.stats.mode == "lr"


# -- rejected drafts: unverified text, in a response only when asked for -----------------------

@LOOP
async def test_rejected_drafts_only_when_the_request_asks(app, http):
    from protos.lookahead.v1 import lookahead_pb2 as pb

    # sampled, so draft and target rows draw with other seeds and the exact verifier rejects drafts
    body = {"model": "lookahead", "messages": MSG, "max_tokens": 24, "temperature": 1.0, "seed": 5}
    for la in ({"mode": "lr", "depth": 2}, {"mode": "lr", "depth": 2, "rejected_drafts": False}):
        r = await http.post("/v1/chat/completions", json={**body, "lookahead": la})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["lookahead"]["verified_steps"] > r.json()["usage"]["lookahead"]["accepted_steps"]
        assert not any("rejected_draft" in s for s in r.json()["lookahead"]["steps"])
    la = {"mode": "lr", "depth": 2, "rejected_drafts": True}
    full = (await http.post("/v1/chat/completions", json={**body, "lookahead": la})).json()
    assert any(s.get("rejected_draft") for s in full["lookahead"]["steps"])
    chunks = events(await http.post("/v1/chat/completions", json={**body, "lookahead": la, "stream": True}))
    streamed = [s for c in chunks for s in c["lookahead"]["steps"]]
    assert [s.get("rejected_draft") for s in streamed if s.get("rejected_draft")] == \
        [s["rejected_draft"] for s in full["lookahead"]["steps"] if s.get("rejected_draft")]

    def req(shown: bool):
        return pb.GenerateRequest(messages=[pb.ChatMessage(role="user", content=QUESTION)], max_tokens=24,
                                  temperature=1.0, seed=5,
                                  lookahead=pb.LookaheadOptions(mode="lr", depth=2, rejected_drafts=shown))

    plain, shown = (await app.ingress.Generate(req(False), Context())), (await app.ingress.Generate(req(True), Context()))
    assert plain.text == shown.text == full["choices"][0]["message"]["content"]
    assert not any(s.HasField("rejected_draft") for s in plain.steps)
    assert [s.rejected_draft for s in shown.steps if s.HasField("rejected_draft")] == \
        [s["rejected_draft"] for s in full["lookahead"]["steps"] if s.get("rejected_draft")]


# -- grpc.health.v1: the standard health service beside lookahead.v1 ---------------------------

@LOOP
async def test_grpc_standard_health_check_and_watch(app, http):
    import grpc

    from protos.grpc.health.v1 import health_pb2 as hpb

    async def check(service: str) -> tuple:
        ctx = Context()
        r = await app.ingress.Check(hpb.HealthCheckRequest(service=service), ctx)
        return r.status, ctx.code

    serving = hpb.HealthCheckResponse.SERVING
    for service in ("", "lookahead.v1.LookaheadService", "target", "draft"):  # this app's roles
        assert await check(service) == (serving, None), service
    assert (await check("judge"))[1] == grpc.StatusCode.NOT_FOUND  # no judge deployed here
    watched = [r.status async for r in app.ingress.Watch(hpb.HealthCheckRequest(service="judge"), Context())]
    assert watched == [hpb.HealthCheckResponse.SERVICE_UNKNOWN]

    engine = app.engines["target"].engine
    original = engine.check_health

    async def sick():
        raise RuntimeError("device lost")

    engine.check_health = sick  # one model in both roles: target and draft read not ready
    try:
        assert await check("") == (hpb.HealthCheckResponse.NOT_SERVING, None)
        assert await check("draft") == (hpb.HealthCheckResponse.NOT_SERVING, None)
        r = await http.get("/health")  # the HTTP probe agrees, and says when to look again
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    finally:
        engine.check_health = original
