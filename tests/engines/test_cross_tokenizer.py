"""Steps crossing tokenizers, with drafts accepted: a draft whose tokenizer key differs from the
target's hands each step over as text and the target re-encodes it.

Qwen2.5-0.5B drafts for itself with its tokenizer key forced apart, so every drafted step crosses as
text, and greedy drafts are the target's own steps, so the exact verifier accepts them. Qwen rather
than SmolLM2: across tokenizers the answer equals plain decoding only where re-encoding a step gives
back the target's own tokens (README, Correctness), and Qwen writes a blank line as the one token it
encodes to. (tests/engines/test_lossless.py covers two different models, where nothing is accepted.)
"""
from __future__ import annotations

import pytest

from orchestrator.lookahead import LookaheadParams, generate
from orchestrator.types import Prompt
from tests.support.data import gsm8k, step_messages
from tests.support.engines import hf_config
from tests.support.references import greedy_reference_async
from verifier.exact import ExactVerifier

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
MODEL = "qwen2.5-0.5b"
MAX_TOKENS = 48


@pytest.mark.asyncio(loop_scope="module")
async def test_steps_crossing_as_text_are_accepted_and_the_answer_is_plain_decoding(engines):
    target, draft = engines.hf(MODEL), engines.hf(MODEL, tokenizer_key="forced-apart")
    assert draft.tokenizer_key != target.tokenizer_key  # every step crosses as text
    messages = step_messages(gsm8k(1)[0]["question"])
    ar = await greedy_reference_async(engines, hf_config(MODEL), messages, MAX_TOKENS)
    assert len(ar.steps) >= 2
    lr = await generate(target, Prompt(messages=messages), LookaheadParams(mode="lr", depth=2, max_tokens=MAX_TOKENS),
                        draft, ExactVerifier())
    assert lr.text == ar.text
    assert [t for s in lr.steps for t in s.token_ids] == [t for s in ar.steps for t in s.token_ids]
    assert lr.stats.accepted_steps >= 2 and lr.stats.accepted_by_depth[1] >= 1, lr.stats.to_dict()
    assert "draft" in {s.source for s in lr.steps}
