"""The pre-check in front of every semantic verifier, and judge/rater prompts on thinking models.

Equal text (after whitespace/case folding) is accepted without a model call; a stop-reason
mismatch is rejected without one. Judge and rater prompts ask the chat template for no
thinking, checked with the real Qwen2.5 tokenizer under its own template and under a
Qwen3-style template that understands `enable_thinking`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from orchestrator.types import Prompt, Step, VerifyPair
from tests.support.scorers import ScriptedScorer
from verifier.factory import build_verifier
from verifier.judge import LLMJudgeVerifier
from verifier.numeric import GuardedVerifier, NumericGuard
from verifier.precheck import EQUAL
from verifier.target_score import TargetScoreVerifier

QUESTION = "Natalia sold clips to 48 of her friends in April, and half as many in May. How many in total?"


def pair(draft: str, target: str, draft_stop: str = "delimiter", target_stop: str = "delimiter") -> VerifyPair:
    return VerifyPair(Prompt(messages=[{"role": "user", "content": QUESTION}]), [],
                      Step(draft, [], "a", draft_stop, "draft"), Step(target, [], "b", target_stop))


SAME = pair("In May she sold 48 / 2 = 24 clips.\n\n", "In May she  sold 48 / 2 = 24 clips.\n\n")
OTHER = pair("In May she sold half as many: 24 clips.\n\n", "In May she sold 48 / 2 = 24 clips.\n\n")
EARLY_END = pair("The answer is 72.", "The answer is 72.\n\n", draft_stop="eos")
LATE_END = pair("The answer is 72.\n\n", "The answer is 72.", target_stop="eos")


class RecordingVerifier:
    name = "fake"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def verify(self, pairs):
        from orchestrator.types import Verdict

        self.seen += [p.draft.text for p in pairs]
        return [Verdict(False, 0.1, self.name) for _ in pairs]


@pytest.mark.parametrize("cls, probs", [
    (LLMJudgeVerifier, [0.1, 0.0, 0.9, 0.0]),  # P(yes) = 0.1
    (TargetScoreVerifier, [0.5, 0.5] + [0.0] * 8),  # rating 0.5
])
async def test_equal_and_stop_mismatched_pairs_never_reach_the_model(cls, probs):
    scorer = ScriptedScorer(probs)
    verifier = cls(scorer)
    out = await verifier.verify([SAME, OTHER, EARLY_END, LATE_END])
    assert (out[0].accepted, out[0].score, out[0].verifier) == (True, 1.0, EQUAL)
    assert (out[1].accepted, out[1].verifier) == (False, verifier.name)  # the one pair the model ruled on
    for v in out[2:]:
        assert (v.accepted, v.verifier) == (False, "stop-reason")
    assert len(scorer.prompts) == 1 and OTHER.draft.text.strip() in scorer.prompts[0].messages[-1]["content"]
    assert await verifier.verify([SAME]) == [out[0]] and len(scorer.prompts) == 1  # no call at all


async def test_target_score_accepts_the_targets_own_step_unrated():
    # the rater is never shown the target's step; the pre-check is where that step counts
    scorer = ScriptedScorer([1.0] + [0.0] * 9)  # the rater would give it 0
    out = await TargetScoreVerifier(scorer).verify([SAME])
    assert out[0].accepted and out[0].verifier == EQUAL and scorer.prompts == []


async def test_guard_and_inner_verifier_only_see_unequal_pairs():
    inner = RecordingVerifier()
    out = await GuardedVerifier(inner, NumericGuard()).verify([SAME, OTHER, EARLY_END])
    assert [v.verifier for v in out] == [EQUAL, "fake+numeric", "stop-reason"]
    assert inner.seen == [OTHER.draft.text]


async def test_embedding_verifier_from_the_factory_prechecks():
    from deployments.model_cache import ModelNotAvailable, resolve_model

    try:
        path = resolve_model("minilm-l6")
    except ModelNotAvailable as exc:
        pytest.fail(str(exc))  # a missing model is a failure, never a skip
    verifier = build_verifier("embedding", embedding_model=path, plan_guard=False)
    out = await verifier.verify([SAME, OTHER, EARLY_END])
    assert [v.verifier for v in out] == [EQUAL, "embedding+numeric", "stop-reason"]
    assert out[0].accepted and not out[2].accepted
    assert out[1].detail.startswith("cosine=")
    bare = await build_verifier("embedding", embedding_model=path, numeric_guard=False,
                                plan_guard=False).verify([SAME, LATE_END])
    assert [v.verifier for v in bare] == [EQUAL, "stop-reason"]


# --- thinking models ------------------------------------------------------------------------

def qwen3_style_template() -> str:
    """A chat template shipped in the vLLM package that handles `enable_thinking` as Qwen3's does
    (an empty think block after the generation prompt when it is False)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("vllm is part of the test environment (its bundled chat templates are used here)")
    path = Path(spec.submodule_search_locations[0]) / "transformers_utils/chat_templates/template_minicpmv45.jinja"
    text = path.read_text()
    assert "enable_thinking" in text
    return text


@pytest.fixture(scope="module")
def qwen_tokenizer():
    from transformers import AutoTokenizer

    from deployments.model_cache import ModelNotAvailable, resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model("qwen2.5-0.5b"))
    except ModelNotAvailable as exc:
        pytest.fail(str(exc))


def test_judge_and_rater_prompts_ask_for_no_thinking():
    for verifier in (LLMJudgeVerifier(ScriptedScorer([])), TargetScoreVerifier(ScriptedScorer([]))):
        assert verifier.prompt(OTHER).chat_template_kwargs == {"enable_thinking": False}


def test_thinking_template_renders_an_empty_think_block_for_judges(qwen_tokenizer):
    import copy

    from deployments.engines.tokens import PromptRenderer

    tok = copy.deepcopy(qwen_tokenizer)
    tok.chat_template = qwen3_style_template()
    renderer = PromptRenderer(tok)
    judge_prompt = LLMJudgeVerifier(ScriptedScorer([])).prompt(OTHER)
    text = renderer.text(judge_prompt)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # the answer comes first
    thinking = Prompt(messages=judge_prompt.messages, chat_template_kwargs={"enable_thinking": True})
    assert renderer.text(thinking).endswith("<|im_start|>assistant\n<think>\n")
    # the rendered ids are cached per (messages, kwargs): the two renderings stay apart
    assert renderer.ids(judge_prompt) != renderer.ids(thinking)
    assert renderer.ids(judge_prompt) == tok.encode(text, add_special_tokens=False)


def test_a_template_without_thinking_ignores_the_setting(qwen_tokenizer):
    from deployments.engines.tokens import PromptRenderer

    renderer = PromptRenderer(qwen_tokenizer)  # Qwen2.5's own template
    judge_prompt = LLMJudgeVerifier(ScriptedScorer([])).prompt(OTHER)
    plain = Prompt(messages=judge_prompt.messages)
    assert renderer.text(judge_prompt) == renderer.text(plain)
    assert renderer.text(judge_prompt).endswith("<|im_start|>assistant\n")


def test_the_pre_check_keeps_case_and_rules_a_think_mismatch():
    from verifier.precheck import ruling

    assert ruling(pair("Let N = 5 be the count.\n\n", "Let n = 5 be the count.\n\n")) is None  # the model decides
    closes = pair("So the answer is 12.</think>\n\n", "So the answer is 12.\n\n")
    opens = pair("Check: 3 * 4 = 12.\n\n", "Check: 3 * 4 = 12.</think>\n\n")
    for p in (closes, opens):
        v = ruling(p)
        assert (v.accepted, v.verifier) == (False, "stop-reason") and "</think>" in v.detail
    assert "draft" in ruling(closes).detail and "target" in ruling(opens).detail


@pytest.mark.parametrize("probs, accepted", [
    ([0.01, 0.0, 0.005, 0.0], False),  # 1% yes, 0.5% no: the judge answered something else
    ([0.3, 0.1, 0.05, 0.0], False),  # P(yes) 0.4 < 0.5, however small P(no) is
    ([0.45, 0.1, 0.3, 0.1], True),
])
async def test_judge_decides_on_the_raw_probabilities(probs, accepted):
    out = await LLMJudgeVerifier(ScriptedScorer(probs)).verify([OTHER])
    assert out[0].accepted is accepted and out[0].score == pytest.approx(probs[0] + probs[1])


@pytest.mark.parametrize("probs, accepted", [
    ([0.0] * 9 + [0.04], False),  # every digit's mass on 9, but only 4% of it: no rating was given
    ([0.0] * 8 + [0.3, 0.5], True),  # 80% on digits, rating 8.6
])
async def test_rater_rejects_when_the_digits_get_little_mass(probs, accepted):
    out = await TargetScoreVerifier(ScriptedScorer(probs)).verify([OTHER])
    assert out[0].accepted is accepted and "digits=" in out[0].detail
