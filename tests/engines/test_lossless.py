"""Lossless mode on real models: greedy + exact verifier => lr output == ar output, token for token.

Both schedules, the step-separating system prompt and answers long enough for several steps,
on a pair that accepts drafts: Qwen2.5-0.5B drafting for itself, the draft never writing a token
that holds "**" (engine option `suppress_tokens`): its steps without bold text are the target's
own tokens and are accepted, several in a row, while its bold steps are written otherwise and
rejected, so both paths of the exact verifier run on every answer. Token ids cross as they are.

The different-token pair: the same draft, its steps re-spelled as a tokenizer without the
".\n\n" merge would write them ("." + "\n\n", tests/support/respell.py; Qwen kept from a merged
token rewrites its text rather than spelling it in other tokens, so no real pair does this often
enough to test). Such a step has the target's very text in other ids; accepting it would
condition the deeper target rows on tokens plain decoding never writes, so the exact verifier
compares ids and the chain stops there (orchestrator/accept.py, `same_tokens`). Drafts from
another tokenizer, crossing as text, accepted and lossless: tests/engines/test_cross_tokenizer.py.

The target runs with `batch_invariant` (rows one at a time, the path `ar` takes): the exact
claim README "Correctness" makes. And `ar` itself equals one plain `model.generate` call.
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
from tests.support.respell import Respelled, unmerged
from verifier.exact import ExactVerifier

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
SYSTEM = "Solve the problem step by step. Put a blank line between steps."
QUESTIONS = [row["question"] for row in gsm8k(2)]
MAX_TOKENS = 80


def prompt(q: str) -> Prompt:
    return Prompt(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}])


@pytest.fixture(scope="module")
def qwen():
    return HFEngine(EngineConfig(model="qwen2.5-0.5b", batch_invariant=True))


@pytest.fixture(scope="module")
def qwen_no_bold(qwen):
    bold = [i for i in range(len(qwen.tokenizer)) if "**" in qwen.tokenizer.decode([i])]
    return HFEngine(EngineConfig(model="qwen2.5-0.5b", batch_invariant=True,
                                 engine_kwargs={"suppress_tokens": bold}))


@pytest.fixture(scope="module")
def qwen_respelled(qwen_no_bold):
    return Respelled(qwen_no_bold, unmerged(qwen_no_bold.tokenizer, ".\n\n"))


@pytest.fixture(scope="module")
def qwen_ar(qwen):
    async def run():
        return {q: await generate(qwen, prompt(q), LookaheadParams(mode="ar", max_tokens=MAX_TOKENS))
                for q in QUESTIONS}
    return asyncio.run(run())


def ids(result) -> list[int]:
    return [t for s in result.steps for t in s.token_ids]


async def check_pair(target, draft, ar_results: dict, depth: int, schedule: str,
                     questions: list[str] = QUESTIONS) -> dict:
    """lr == ar on every question; the run's counts (accepted drafts by depth, same-text rejections)."""
    totals = {"accepted_by_depth": [0] * depth, "verified": 0, "same_text_rejected": 0}
    for q in questions:
        ar = ar_results[q]
        assert 0 < len(ids(ar)) <= MAX_TOKENS and len(ar.steps) >= 3
        params = LookaheadParams(mode="lr", schedule=schedule, depth=depth, max_tokens=MAX_TOKENS)
        lr = await generate(target, prompt(q), params, draft, ExactVerifier())
        assert ids(lr) == ids(ar), f"{schedule}: lr differs from ar for {q[:60]!r}"
        assert lr.text == ar.text
        for i, n in enumerate(lr.stats.accepted_by_depth):
            totals["accepted_by_depth"][i] += n
        totals["verified"] += lr.stats.verified_steps
        # a target step emitted after a draft with its very text: the draft had other token ids
        totals["same_text_rejected"] += sum(s.rejected_draft == s.text for s in lr.steps)
    print(f"{schedule}: {totals}")
    return totals


# sync only: the async schedule runs this pair, re-spelled, in the test after this one
@pytest.mark.parametrize("schedule", ["sync"])
async def test_lossless_shared_tokenizer(qwen, qwen_no_bold, qwen_ar, schedule):
    assert qwen.tokenizer_key == qwen_no_bold.tokenizer_key  # token ids cross as they are
    totals = await check_pair(qwen, qwen_no_bold, qwen_ar, depth=3, schedule=schedule)
    # drafts accepted (speculation happened), chains reaching depth 2, and others rejected (both
    # paths ran)
    assert totals["accepted_by_depth"][0] > 0 and totals["accepted_by_depth"][1] > 0, totals
    assert totals["verified"] > sum(totals["accepted_by_depth"]), totals


class Behind:
    """The target, each call started `seconds` late: in the async window a draft of the target's
    own size then finishes before the target's step, as a smaller draft would, and is judged in
    the chain rather than aside. Timing only: lossless output does not depend on it."""

    def __init__(self, engine, seconds: float) -> None:
        self.engine, self.seconds = engine, seconds

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    async def generate_steps(self, requests):
        await asyncio.sleep(self.seconds)
        return await self.engine.generate_steps(requests)


@pytest.mark.parametrize("schedule", ["sync", "async"])
async def test_lossless_with_a_draft_that_writes_the_targets_text_in_other_tokens(qwen, qwen_respelled, qwen_ar,
                                                                                  schedule):
    assert qwen.tokenizer_key == qwen_respelled.tokenizer_key  # one vocabulary: ids cross as they are
    target = qwen if schedule == "sync" else Behind(qwen, 1.5)
    # the second question: its answer has both kinds of step (the first's only re-spelled ones)
    totals = await check_pair(target, qwen_respelled, qwen_ar, depth=3, schedule=schedule, questions=QUESTIONS[1:])
    # drafts with the target's very text in other tokens were rejected in the chain, the target's
    # own step emitted (accepted, they would not be counted here); other drafts were accepted
    assert totals["same_text_rejected"] > 0, totals
    assert totals["accepted_by_depth"][0] > 0, totals


def test_ar_equals_one_plain_generate_call(qwen, qwen_ar):
    for q in QUESTIONS:
        ar = qwen_ar[q]
        prompt_ids = torch.tensor([qwen.renderer.ids(prompt(q))])
        with torch.inference_mode():
            out = qwen.model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=False,
                                      max_new_tokens=MAX_TOKENS, pad_token_id=qwen.pad_id)
        plain = [t for t in out[0, prompt_ids.shape[1]:].tolist() if t not in qwen.eos_ids]
        assert ids(ar) == plain
        assert ar.text == qwen.tokenizer.decode(plain, skip_special_tokens=True)
