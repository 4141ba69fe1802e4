"""Target-score verifier (SpecReason style): the target rates the drafted step 0-9.

No third model: the target model itself reads the question, the accepted steps and the
drafted step, and is asked for a single digit. The probabilities of "0".."9" come from one
`choice_probs` call for the batch (the model's own probabilities over its whole vocabulary).
When their sum is below MIN_CHOICE_MASS the model did not answer with a rating and the draft
is rejected: a rating read from the digits' share of a 3% mass would be noise. Otherwise the
rating is the *expected* digit over the digits, sum(i * P(i)) / sum(P(i)),
rather than the argmax a greedy single-token answer would give: it is smoother (a step the
model splits between 6 and 8 gets ~7, not whichever wins by a hair) and gives a usable
ranking score; pass `expected=False` for SpecReason's argmax behaviour. Accepted when the
rating >= threshold (SpecReason's default threshold is 7 on a 0-9 scale).

Two worked examples (a correct step -> 9, the same step with a wrong result -> 1) go in
front as earlier chat turns (`few_shot=True`, the default): they anchor the scale's ends.

The target's own step in the pair is not shown to the rater: the question is whether the
draft is a good next step, not whether it matches one particular continuation. It is used by
the pre-check in front (verifier/precheck.py): a draft equal to it is accepted unrated.
"""
from __future__ import annotations

from orchestrator.protocols import ChoiceScorer
from orchestrator.types import Prompt, Verdict, VerifyPair
from verifier.judge import MIN_CHOICE_MASS, NO_THINKING, clip, question_text
from verifier.kinds import KINDS
from verifier.precheck import prechecked

DIGITS = tuple(str(i) for i in range(10))

SCORE_SYSTEM = "You are a strict math teacher grading a student's solution one step at a time."
SCORE_TEMPLATE = """Problem: {question}

Solution so far:
{prefix}

Proposed next step:
{draft}

Is the proposed next step correct (right numbers, right calculations) and useful for solving the problem? Rate it from 0 (wrong) to 9 (correct and useful). Answer with a single digit."""

_EXAMPLE_QUESTION = "A baker makes 30 muffins and sells 3/5 of them. How many muffins are left?"
#: (question, solution so far, proposed step, rating)
SCORE_EXAMPLES = (
    (_EXAMPLE_QUESTION, "(no steps yet)", "He sells 3/5 * 30 = 18 muffins.\n\n", "9"),
    (_EXAMPLE_QUESTION, "(no steps yet)", "He sells 3/5 * 30 = 16 muffins.\n\n", "1"),
)


class TargetScoreVerifier:
    name = "target-score"

    def __init__(self, scorer: ChoiceScorer, threshold: float = KINDS["target-score"].threshold, *, expected: bool = True,
                 question_chars: int = 1000, prefix_chars: int = 1500, step_chars: int = 800,
                 few_shot: bool = True) -> None:
        self.scorer = scorer
        self.threshold = float(threshold)
        self.expected = expected
        self.question_chars = question_chars
        self.prefix_chars = prefix_chars
        self.step_chars = step_chars
        self.few_shot = few_shot

    def prompt(self, pair: VerifyPair) -> Prompt:
        prefix = clip("".join(s.text for s in pair.prefix), self.prefix_chars, keep="tail")
        user = SCORE_TEMPLATE.format(
            question=clip(question_text(pair.prompt), self.question_chars),
            prefix=prefix or "(no steps yet)",
            draft=clip(pair.draft.text, self.step_chars))
        messages = [{"role": "system", "content": SCORE_SYSTEM}]
        for question, prefix_text, draft, rating in SCORE_EXAMPLES if self.few_shot else ():
            messages += [{"role": "user", "content": SCORE_TEMPLATE.format(
                question=question, prefix=prefix_text, draft=draft)},
                         {"role": "assistant", "content": rating}]
        return Prompt(messages=messages + [{"role": "user", "content": user}], chat_template_kwargs=NO_THINKING)

    def rating(self, probs: list[float]) -> float:
        if self.expected:
            total = sum(probs) or 1.0
            return sum(i * p for i, p in enumerate(probs)) / total
        return float(max(range(len(probs)), key=probs.__getitem__))

    async def verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        return await prechecked(pairs, self._verify)

    async def _verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        if not pairs:
            return []
        probs = await self.scorer.choice_probs([self.prompt(p) for p in pairs], list(DIGITS))
        out = []
        for row in probs:
            r = self.rating(row)
            best = max(range(10), key=row.__getitem__)
            mass = float(sum(row))
            out.append(Verdict(mass >= MIN_CHOICE_MASS and r >= self.threshold, r, self.name,
                               f"rating={r:.2f} argmax={best} p={row[best]:.2f} digits={mass:.2f}"))
        return out
