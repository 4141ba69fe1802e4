"""Lossless mode on real models: greedy + exact verifier => lr output == ar output, token for token.

Two pairs: SmolLM2-135M drafting for Qwen2.5-0.5B (different tokenizers: steps cross as
text) and a shared-tokenizer pair (SmolLM2-135M in bf16 drafting for itself in fp32: token
ids cross, and the bf16 rounding makes real mismatches). And `ar` itself equals one plain
`model.generate` call of the target.
"""
from __future__ import annotations

import asyncio

import pytest
import torch

from deployments.config import EngineConfig
from deployments.engines.hf import HFEngine
from orchestrator.lookahead import LookaheadParams, generate
from orchestrator.types import Prompt
from tests.support.data import gsm8k
from verifier.exact import ExactVerifier

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
QUESTIONS = [row["question"] for row in gsm8k(5)]
MAX_TOKENS = 32


@pytest.fixture(scope="module")
def qwen():
    return HFEngine(EngineConfig(model="qwen2.5-0.5b"))


@pytest.fixture(scope="module")
def smol():
    return HFEngine(EngineConfig(model="smollm2-135m"))


@pytest.fixture(scope="module")
def smol_bf16():
    return HFEngine(EngineConfig(model="smollm2-135m", dtype="bfloat16"))


def _ar_all(engine) -> dict:
    async def run():
        return {q: await generate(engine, Prompt(messages=[{"role": "user", "content": q}]),
                                  LookaheadParams(mode="ar", max_tokens=MAX_TOKENS)) for q in QUESTIONS}
    return asyncio.run(run())


@pytest.fixture(scope="module")
def qwen_ar(qwen):
    return _ar_all(qwen)


@pytest.fixture(scope="module")
def smol_ar(smol):
    return _ar_all(smol)


def ids(result) -> list[int]:
    return [t for s in result.steps for t in s.token_ids]


async def check_pair(target, draft, ar_results: dict, depth: int) -> dict:
    totals = {"accepted": 0, "verified": 0, "steps": 0}
    for q in QUESTIONS:
        prompt = Prompt(messages=[{"role": "user", "content": q}])
        ar = ar_results[q]
        assert 0 < len(ids(ar)) <= MAX_TOKENS
        for schedule in ("sync", "async"):
            params = LookaheadParams(mode="lr", schedule=schedule, depth=depth, max_tokens=MAX_TOKENS)
            lr = await generate(target, prompt, params, draft, ExactVerifier())
            assert ids(lr) == ids(ar), f"{schedule}: lr differs from ar for {q[:60]!r}"
            assert lr.text == ar.text
            totals["accepted"] += lr.stats.accepted_steps
            totals["verified"] += lr.stats.verified_steps
            totals["steps"] += len(lr.steps)
    return totals


async def test_lossless_different_tokenizers(qwen, smol, qwen_ar):
    assert qwen.tokenizer_key != smol.tokenizer_key
    totals = await check_pair(qwen, smol, qwen_ar, depth=2)
    assert totals["verified"] > 0  # drafts were really made and ruled on


async def test_lossless_shared_tokenizer(smol, smol_bf16, smol_ar):
    assert smol.tokenizer_key == smol_bf16.tokenizer_key
    totals = await check_pair(smol, smol_bf16, smol_ar, depth=3)
    # bf16 and fp32 agree on most steps: the accept path (token ids crossing) really ran
    assert totals["accepted"] > 0
    print("shared-tokenizer pair:", totals)


def test_ar_equals_one_plain_generate_call(qwen, qwen_ar):
    for q in QUESTIONS:
        prompt = Prompt(messages=[{"role": "user", "content": q}])
        ar = qwen_ar[q]
        prompt_ids = torch.tensor([qwen.renderer.ids(prompt)])
        with torch.inference_mode():
            out = qwen.model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=False,
                                      max_new_tokens=MAX_TOKENS, pad_token_id=qwen.pad_id)
        plain = [t for t in out[0, prompt_ids.shape[1]:].tolist() if t not in qwen.eos_ids]
        assert ids(ar) == plain
        assert ar.text == qwen.tokenizer.decode(plain, skip_special_tokens=True)
