"""LLM-judge verifier: an instruct model says whether two steps are equivalent.

The reference asks Qwen2.5-7B-Instruct (temperature 0) to answer "[aligned]" or
"[unaligned]". Small instruct models follow a plain Yes/No question much better, so the
judge here asks for one word and reads the probability of its first token through any
ChoiceScorer (HFEngine, vLLM, a Serve handle): one `choice_probs` call for the whole batch.

Two worked examples (a paraphrase -> Yes, the same step with a changed result -> No) go in
front as earlier chat turns (`few_shot=True`, the default). Measured with
Qwen2.5-Coder-0.5B-Instruct on the pairs in tests/verifier/test_verifiers.py: zero-shot, P(yes) of
true paraphrases (0.33-0.52) and of changed-number / unrelated steps (0.27-0.49) overlap
widely; with the examples they move apart (0.41-0.53 vs 0.30-0.41) and every paraphrase
beats its own changed-number twin by >= 0.05. The cost is ~250 more prompt tokens, a shared
prefix that vLLM's prefix caching absorbs. The examples lower P(yes) overall, so a small
judge wants its own threshold; re-measure per judge model.

Pairs the pre-check rules on (equal text, a stop-reason mismatch: verifier/precheck.py)
never reach the judge.

Both capitalisations are scored ("Yes", "yes", "No", "no": distinct first tokens in the
Qwen tokenizer) and P(yes) = P(Yes) + P(yes), so the verdict does not depend on which spelling
the model prefers after the chat header. The probabilities are the model's own, over its whole
vocabulary, never renormalised over the four: a judge that puts 1% on "Yes" and 0.5% on "No" is
not answering the question (renormalised, that would read as 0.67 and pass). A pair is accepted
only when P(yes) itself reaches the threshold and the mass on the four answers is at least
MIN_CHOICE_MASS.
"""
from __future__ import annotations

from orchestrator.protocols import ChoiceScorer
from orchestrator.types import Prompt, Verdict, VerifyPair
from verifier.kinds import KINDS
from verifier.precheck import prechecked

YES = ("Yes", "yes")
#: Thinking models' chat templates (Qwen3) open the answer with "<think>"; the choice
#: probabilities must be read at the answer's first token, so judge and rater prompts are
#: rendered with thinking off (the template then writes an empty think block). Templates
#: without the variable ignore it.
NO_THINKING = {"enable_thinking": False}
NO = ("No", "no")
#: judges and raters: below this probability on the answer tokens (yes/no, the digits) the model
#: did not answer what it was asked, and the pair is rejected whatever the split between them
MIN_CHOICE_MASS = 0.5

JUDGE_SYSTEM = "You are a careful math teacher. You check whether two solution steps agree."
JUDGE_TEMPLATE = """{context}Step A:
{draft}

Step B:
{target}

Do Step A and Step B say the same thing, with the same numbers and the same calculation results? Answer with a single word: Yes or No."""

_EXAMPLE_CONTEXT = "Problem: A baker makes 30 muffins and sells 3/5 of them. How many muffins are left?\n\n"
#: (context, step A, step B, answer): a paraphrase and a changed result, on another problem
JUDGE_EXAMPLES = (
    (_EXAMPLE_CONTEXT, "He sells 3/5 * 30 = 18 muffins.\n\n", "The baker sells 30 * 3/5 = 18 of the muffins.\n\n", "Yes"),
    (_EXAMPLE_CONTEXT, "He sells 3/5 * 30 = 18 muffins.\n\n", "He sells 3/5 * 30 = 16 muffins.\n\n", "No"),
)


def clip(text: str, limit: int, keep: str = "head") -> str:
    """Shorten text to about `limit` characters, keeping its head or its tail."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + " ..." if keep == "head" else "... " + text[-limit:].lstrip()


def question_text(prompt: Prompt) -> str:
    """The user's question: the last user message of a chat, or the raw completion text."""
    if prompt.messages is not None:
        users = [m for m in prompt.messages if m.get("role") == "user"]
        msg = users[-1] if users else (prompt.messages[-1] if prompt.messages else {})
        return str(msg.get("content", ""))
    return prompt.text or ""


def context_block(pair: VerifyPair, question_chars: int = 600, prefix_chars: int = 600) -> str:
    """A short "Problem / Previous steps" preamble, empty parts left out."""
    parts = []
    q = clip(question_text(pair.prompt), question_chars)
    if q:
        parts.append(f"Problem: {q}\n\n")
    prev = clip("".join(s.text for s in pair.prefix), prefix_chars, keep="tail")
    if prev:
        parts.append(f"Previous steps:\n{prev}\n\n")
    return "".join(parts)


class LLMJudgeVerifier:
    name = "llm-judge"

    def __init__(self, scorer: ChoiceScorer, threshold: float = KINDS["llm-judge"].threshold, *, step_chars: int = 800,
                 with_context: bool = True, few_shot: bool = True) -> None:
        self.scorer = scorer
        self.threshold = float(threshold)
        self.step_chars = step_chars
        self.with_context = with_context
        self.few_shot = few_shot

    def prompt(self, pair: VerifyPair) -> Prompt:
        user = JUDGE_TEMPLATE.format(
            context=context_block(pair) if self.with_context else "",
            draft=clip(pair.draft.text, self.step_chars),
            target=clip(pair.target.text, self.step_chars))
        messages = [{"role": "system", "content": JUDGE_SYSTEM}]
        for context, a, b, answer in JUDGE_EXAMPLES if self.few_shot else ():
            messages += [{"role": "user", "content": JUDGE_TEMPLATE.format(
                context=context if self.with_context else "", draft=a, target=b)},
                         {"role": "assistant", "content": answer}]
        return Prompt(messages=messages + [{"role": "user", "content": user}], chat_template_kwargs=NO_THINKING)

    async def verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        return await prechecked(pairs, self._verify)

    async def _verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        if not pairs:
            return []
        probs = await self.scorer.choice_probs([self.prompt(p) for p in pairs], [*YES, *NO])
        out = []
        for row in probs:
            p_yes, p_no = float(sum(row[: len(YES)])), float(sum(row[len(YES):]))
            ok = p_yes + p_no >= MIN_CHOICE_MASS and p_yes >= self.threshold
            out.append(Verdict(ok, p_yes, self.name, f"p_yes={p_yes:.4f} p_no={p_no:.4f}"))
        return out
