"""One typed request from both protocols: an OpenAI HTTP body and the lookahead.v1 message
that carries the same options build the same RequestSpec, and are refused alike.

No models: the builders alone (tests/api/test_openai_surface.py sends the same request over
both protocols through the real Ingress and Orchestrator and compares the sessions)."""
from __future__ import annotations

import dataclasses

import pytest
from google.protobuf import struct_pb2

from deployments.api import openai_api as oa
from deployments.api.errors import HTTPError
from deployments.api.request import RequestOptions, RequestSpec
from protos.lookahead.v1 import lookahead_pb2 as pb

# every per-request option set away from its default
LOOKAHEAD = {"mode": "lr+sd", "depth": 3, "width": 2, "schedule": "async", "verifier": "normalized",
             "max_step_tokens": 40, "rejected_drafts": True}
SAMPLING = {"max_tokens": 7, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "seed": 11,
            "repetition_penalty": 1.1, "min_p": 0.05,
            # vLLM's extras on when the answer ends
            "min_tokens": 3, "ignore_eos": True, "stop_token_ids": [50, 7], "include_stop_str_in_output": True,
            "skip_special_tokens": False}
BIAS = {"17": 2.5, "5": -1.0}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6 times 7?"}]


def http_body(chat: bool = True, **extra) -> dict:
    body = {"model": "lookahead", **{**SAMPLING, **extra}, "logit_bias": BIAS, "lookahead": LOOKAHEAD,
            "stop": ["END", "\n\n\n"]}
    if chat:
        return {**body, "messages": MESSAGES, "chat_template_kwargs": {"enable_thinking": False},
                "add_generation_prompt": False}
    return {**body, "prompt": "Step 1:"}


def grpc_request(chat: bool = True, **extra) -> pb.GenerateRequest:
    req = pb.GenerateRequest(model="lookahead", **{**SAMPLING, **extra}, lookahead=pb.LookaheadOptions(**LOOKAHEAD),
                             logit_bias={int(k): v for k, v in BIAS.items()}, stop=["END", "\n\n\n"])
    if chat:
        req.messages.extend(pb.ChatMessage(**m) for m in MESSAGES)
        kwargs = struct_pb2.Struct()
        kwargs.update({"enable_thinking": False})
        req.chat_template_kwargs.CopyFrom(kwargs)
        req.add_generation_prompt = False
    else:
        req.prompt = "Step 1:"
    return req


@pytest.mark.parametrize("chat", [True, False])
def test_both_protocols_build_the_same_spec(chat):
    model = oa.ChatCompletionRequest if chat else oa.CompletionRequest
    over_http = RequestSpec.from_openai(model.model_validate(http_body(chat)), "rid", 5.0)
    over_grpc = RequestSpec.from_grpc(grpc_request(chat), "rid", 5.0)
    assert over_http == over_grpc
    # and every option arrived, none left at its default
    unset = [f.name for f in dataclasses.fields(RequestOptions)
             if getattr(over_http.options, f.name) == f.default]
    assert unset == []
    assert over_http.options.logit_bias == ((5, -1.0), (17, 2.5))
    assert over_http.stop == ("END", "\n\n\n")
    assert over_http.prompt.chat_template_kwargs == ({"enable_thinking": False} if chat else None)
    assert over_http.options.stop_token_ids == (7, 50)
    assert over_http.prompt.add_generation_prompt is not chat


def test_vllm_off_values_and_int64_seeds_map_alike():
    """top_k -1 is vLLM's "no top-k"; any int64 seed maps into the engines' range the same way
    over both protocols (seeds already in range unchanged, distinct seeds stay distinct here)."""
    seeds = {}
    for seed in (0, 11, 2**31 - 1, 2**31, -1, -(2**63), 2**63 - 1):
        a = RequestSpec.from_openai(oa.CompletionRequest.model_validate(
            {"model": "m", "prompt": "x", "seed": seed, "top_k": -1}), "rid")
        b = RequestSpec.from_grpc(pb.GenerateRequest(prompt="x", seed=seed, top_k=-1), "rid")
        assert a == b and a.options.top_k == 0
        assert 0 <= a.options.seed < 2**31
        seeds[seed] = a.options.seed
    assert seeds[0] == 0 and seeds[11] == 11 and seeds[2**31 - 1] == 2**31 - 1
    assert seeds[-1] != seeds[11]
    for bad in (2**63, -(2**63) - 1):
        with pytest.raises(ValueError):
            oa.CompletionRequest.model_validate({"model": "m", "prompt": "x", "seed": bad})


def test_continue_final_message_leaves_the_last_message_open():
    msgs = MESSAGES + [{"role": "assistant", "content": "It is"}]
    body = {"model": "m", "messages": msgs, "continue_final_message": True}
    over_http = RequestSpec.from_openai(oa.ChatCompletionRequest.model_validate(body), "rid")
    req = pb.GenerateRequest(messages=[pb.ChatMessage(**m) for m in msgs], continue_final_message=True)
    assert RequestSpec.from_grpc(req, "rid") == over_http
    # unset, add_generation_prompt gives way to continue_final_message
    assert (over_http.prompt.add_generation_prompt, over_http.prompt.continue_final_message) == (False, True)
    for bad, param in [({**body, "add_generation_prompt": True}, "continue_final_message"),
                       ({**body, "messages": MESSAGES}, "continue_final_message")]:
        with pytest.raises(ValueError) as err:
            oa.ChatCompletionRequest.model_validate(bad)
        assert err.value.errors()[0]["loc"] == (param,)
    with pytest.raises(HTTPError) as err:  # chat only
        RequestSpec.from_grpc(pb.GenerateRequest(prompt="x", continue_final_message=True), "rid")
    assert err.value.body["error"]["param"] == "continue_final_message"


def test_every_option_has_a_proto_field_of_the_same_name():
    proto = {f.name for f in pb.GenerateRequest.DESCRIPTOR.fields} | {
        f.name for f in pb.LookaheadOptions.DESCRIPTOR.fields}
    assert {f.name for f in dataclasses.fields(RequestOptions)} <= proto
    # and the other way: every proto field is a field of the OpenAI request models, which validate it
    http = set(oa.ChatCompletionRequest.model_fields) | set(oa.CompletionRequest.model_fields)
    assert {f.name for f in pb.GenerateRequest.DESCRIPTOR.fields} <= http
    assert {f.name for f in pb.LookaheadOptions.DESCRIPTOR.fields} == set(oa.LookaheadRequestOptions.model_fields)


def test_unset_fields_take_the_server_defaults():
    spec = RequestSpec.from_grpc(pb.GenerateRequest(prompt="x"), "rid")
    assert spec.options == RequestOptions() and spec.stop == () and spec.timeout_s is None
    # proto3 optional: a zero that was set is a value, not "unset"
    zero = RequestSpec.from_grpc(pb.GenerateRequest(prompt="x", top_k=0, temperature=0.0,
                                                    lookahead=pb.LookaheadOptions(depth=0)), "rid")
    assert (zero.options.top_k, zero.options.temperature, zero.options.depth) == (0, 0.0, 0)


@pytest.mark.parametrize("field, value", [
    ("temperature", -1.0), ("top_p", 0.0), ("max_tokens", 0), ("min_p", 2.0), ("repetition_penalty", 0.0),
    ("top_k", -2), ("min_tokens", -1), ("min_tokens", 8), ("stop_token_ids", [-3]),
])
def test_a_bad_value_is_refused_alike_over_both_protocols(field, value):
    with pytest.raises(ValueError) as http_err:
        oa.CompletionRequest.model_validate(http_body(chat=False, **{field: value}))
    with pytest.raises(HTTPError) as grpc_err:
        RequestSpec.from_grpc(grpc_request(chat=False, **{field: value}), "rid")
    assert grpc_err.value.status == 400
    assert grpc_err.value.body["error"]["param"] == ".".join(map(str, http_err.value.errors()[0]["loc"])) == field


@pytest.mark.parametrize("options, param", [
    (pb.LookaheadOptions(mode="fast"), "lookahead.mode"),
    (pb.LookaheadOptions(verifier="cosine"), "lookahead.verifier"),
    (pb.LookaheadOptions(width=0), "lookahead.width"),
    (pb.LookaheadOptions(schedule="later"), "lookahead.schedule"),
    (pb.LookaheadOptions(max_step_tokens=0), "lookahead.max_step_tokens"),
])
def test_bad_lookahead_options_name_their_field(options, param):
    with pytest.raises(HTTPError) as err:
        RequestSpec.from_grpc(pb.GenerateRequest(prompt="x", lookahead=options), "rid")
    assert err.value.body["error"]["param"] == param


def test_messages_and_prompt_exclusive_and_template_kwargs_only_with_messages():
    kwargs = struct_pb2.Struct()
    kwargs.update({"enable_thinking": False})
    for bad, param in [(pb.GenerateRequest(), "messages"),
                       (pb.GenerateRequest(prompt="x", messages=[pb.ChatMessage(role="user", content="y")]), "messages"),
                       (pb.GenerateRequest(messages=[pb.ChatMessage(role="user", content="  ")]), "messages"),
                       (pb.GenerateRequest(prompt="x", chat_template_kwargs=kwargs), "chat_template_kwargs")]:
        with pytest.raises(HTTPError) as err:
            RequestSpec.from_grpc(bad, "rid")
        assert err.value.status == 400 and err.value.body["error"]["param"] == param
