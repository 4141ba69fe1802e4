"""Numeric-consistency guard: reject a drafted step whose numbers disagree with the target's.

Embedding similarity is blind to arithmetic ("48/2 = 24" vs "48/2 = 25" scores 0.986 with
all-MiniLM-L6-v2), so the embedding verifier runs behind this guard. The guard only ever
*rejects*; a pair that passes still needs the inner verifier's approval.

How numbers are compared (kept deliberately simple):

* Extraction normalises the usual spellings first: "$1,200" -> 1200, "3.50" == "3.5",
  ".25" -> 0.25, "12%" -> 12 *or* 0.12, LaTeX (\\frac{a}{b}, \\times, \\div, \\boxed{x},
  1{,}200), GSM8K calculator annotations "<<48/2=24>>" (dropped: they only repeat the
  visible "48/2 = 24"), "#### 72" (a final answer), "Step 3:" / list labels (ignored) and
  number words up to ninety-nine.
* A *result* is the number right after "=" (also "≈", "#### ", "\\boxed{}"), unless an
  operator follows it ("= 48 + 24 = 72": only 72 is a result; "= 3/4" is the fraction
  0.75). Results are what a step computes, so they get the strict rule:
  every result on one side must appear among the numbers of the other side. This rejects
  "48/2 = 24" vs "48/2 = 25" while accepting "48/2 = 24" vs "half of 48 is 24".
* All other numbers are compared as *sets*, not multisets, and in any order: repeating a
  number ("24 clips ... so 24 + 48") or reordering an expression is what paraphrases do,
  and a multiset guard was measured to reject true paraphrases. A number found on only one
  side is tolerated when it is a restated given (it appears in the question or the earlier
  steps, `context_text`) or a unit/small constant (0-12, 24, 52, 60, 100, 365, 1000, 1/2,
  1/4, 3/4...: "half of 48" vs "48/2"). Any other one-sided number means the steps use
  different values: reject.
* An expression a step writes without its result ("3/4 * 5000", "girls = 12 + 13") counts
  as a result too, by its value: "3/4 * 5000" and "4/5 * 5000" name the same numbers (both
  fractions are in the question) but compute 3750 and 4000. A lone "a/b" is a number, not a
  computation, so "48/2" vs "half of 48" still passes.
* Values compare exactly as fractions when both are integers, else with a relative
  tolerance of 1e-3 (so a rounded "3.33" matches "3.333", but "3.3" does not).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction

from orchestrator.types import Prompt, Verdict, VerifyPair
from verifier.judge import question_text
from verifier.plan import PlanGuard
from verifier.precheck import prechecked

# --- normalisation ---------------------------------------------------------------------

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
          "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUES = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_WORD_RE = re.compile(
    r"\b(" + "|".join(_TENS) + r")[- ](" + "|".join(_UNITS[1:10]) + r")\b|\b(" + "|".join(_WORD_VALUES) + r")\b",
    re.IGNORECASE)

_LATEX = [
    (re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"), r" \1/\2 "),
    (re.compile(r"\\boxed\s*\{([^{}]*)\}"), r" = \1 "),
    (re.compile(r"\\(?:text|mathrm|textbf|mathbf)\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\\times|\\cdot|×|·|∗"), " * "),
    (re.compile(r"\\div|÷"), " / "),
    (re.compile(r"\\approx|≈|\\simeq"), " = "),
    (re.compile(r"\{,\}|\\,"), ","),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\\$"), "$"),
    (re.compile(r"\\[()\[\]]"), " "),
]
_CALC_ANNOTATION = re.compile(r"<<[^<>]*>>")
_FINAL_ANSWER = re.compile(r"####")
_LABELS = re.compile(r"\bstep\s+\d+\b|^\s*\d+[.)]\s+(?=\D)", re.IGNORECASE | re.MULTILINE)

# a number: 1,200 | 1200 | 3.50 | .25 ; optional sign only where it cannot be a minus
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?P<num>{_NUM})(?P<pct>\s?%)?")
# the right-hand side of "=": an optional "$", a number, maybe "/number", then what follows
_RESULT_RE = re.compile(
    rf"=\s*\$?\s*-?\s*(?P<num>{_NUM})(?:\s*/\s*(?P<den>{_NUM}))?(?P<pct>\s?%)?(?P<after>\s*[-+*/^x]\s*[\d(.$])?")

_CONSTANTS = [Fraction(n) for n in (*range(13), 24, 30, 52, 60, 100, 365, 1000)] + [
    Fraction(1, 2), Fraction(1, 3), Fraction(2, 3), Fraction(1, 4), Fraction(3, 4)]


def normalize_math(text: str) -> str:
    """Rewrite LaTeX / GSM8K / prose number spellings into plain ASCII arithmetic."""
    text = _CALC_ANNOTATION.sub(" ", text)
    text = _FINAL_ANSWER.sub(" = ", text)
    for pattern, repl in _LATEX:
        text = pattern.sub(repl, text)
    text = _LABELS.sub(" ", text)
    text = text.replace("−", "-").replace("–", "-")

    def word(m: re.Match) -> str:
        if m.group(3):
            return str(_WORD_VALUES[m.group(3).lower()])
        return str(_WORD_VALUES[m.group(1).lower()] + _WORD_VALUES[m.group(2).lower()])

    return _WORD_RE.sub(word, text)


def _value(num: str) -> Fraction:
    # signs are ignored everywhere: "-" is almost always a minus in GSM8K-style steps, and
    # an unsigned comparison still catches every wrong magnitude
    return Fraction(num.replace(",", ""))


@dataclass
class StepNumbers:
    """The numbers of one text. Each occurrence is a tuple of alternative values
    ("12%" may mean 12 or 0.12)."""

    numbers: list[tuple[Fraction, ...]] = field(default_factory=list)
    results: list[tuple[Fraction, ...]] = field(default_factory=list)
    implied: list[Fraction] = field(default_factory=list)  # values of expressions written without "="

    @property
    def values(self) -> set[Fraction]:
        return {v for alts in self.numbers + self.results for v in alts}


_TOKEN = re.compile(rf"(?P<num>{_NUM})|(?P<op>[-+*/x])|(?P<lp>\()|(?P<rp>\))|(?P<skip>\s+|\$|\\left|\\right)|(?P<other>.)",
                    re.DOTALL)


def _evaluate(tokens: list[tuple[str, str]]) -> Fraction | None:
    """The value of one run of number/operator/parenthesis tokens, or None when it is not a
    computation: fewer than two numbers, or a lone "a/b" (a fraction is a number, not a result)."""
    while tokens and tokens[0][0] in ("op", "rp"):
        tokens = tokens[1:]
    while tokens and tokens[-1][0] in ("op", "lp"):
        tokens = tokens[:-1]
    nums = [v for k, v in tokens if k == "num"]
    ops = [v for k, v in tokens if k == "op"]
    if len(nums) < 2 or not ops or ops == ["/"]:
        return None
    depth, expr = 0, []
    for kind, value in tokens:
        if kind == "rp" and depth == 0:
            continue  # an unmatched ")" belongs to the prose around the expression
        depth += (kind == "lp") - (kind == "rp")
        expr.append(f"Fraction('{value.replace(',', '')}')" if kind == "num" else "*" if value == "x" else value)
    expr += [")"] * depth
    try:
        value = eval("".join(expr), {"Fraction": Fraction, "__builtins__": {}})  # noqa: S307 - tokens only
    except (SyntaxError, ZeroDivisionError, TypeError, ValueError):
        return None
    return value if isinstance(value, Fraction) else None


def implied_results(text: str) -> list[Fraction]:
    """The values of the arithmetic a step (already through `normalize_math`) writes without its
    result ("3/4 * 5000", "12 + 13"): a changed operand changes them even when no "= result" follows."""
    out, run = [], []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "skip":
            continue
        if kind == "other":
            value = _evaluate(run)
            if value is not None:
                out.append(abs(value))
            run = []
            continue
        run.append((kind, m.group()))
    value = _evaluate(run)
    if value is not None:
        out.append(abs(value))
    return out


def extract_numbers(text: str) -> StepNumbers:
    text = normalize_math(text)
    out = StepNumbers(implied=implied_results(text))
    for m in _NUMBER_RE.finditer(text):
        v = _value(m.group("num"))
        out.numbers.append((v, v / 100) if m.group("pct") else (v,))
    for m in _RESULT_RE.finditer(text):
        if m.group("after") and not m.group("den"):
            continue  # "= 48 + 24 = 72": an expression, its result comes later in the chain
        if m.group("den") and m.group("after"):
            continue  # "= 3/4 * 12 ..." likewise
        v = _value(m.group("num"))
        if m.group("den"):
            den = _value(m.group("den"))
            if den == 0:
                continue
            v = v / den
        out.results.append((v, v / 100) if m.group("pct") else (v,))
    return out


def close(a: Fraction, b: Fraction) -> bool:
    if a == b:
        return True
    if a.denominator == 1 and b.denominator == 1:
        return False
    return math.isclose(float(a), float(b), rel_tol=1e-3, abs_tol=1e-9)


def _contains(values: set[Fraction] | list[Fraction], x: Fraction) -> bool:
    return any(close(x, v) for v in values)


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


class NumericGuard:
    """check(draft, target, context) -> (ok, reason). See the module docstring for the rules."""

    def __init__(self, constants: list[Fraction] | None = None) -> None:
        self.constants = list(_CONSTANTS if constants is None else constants)

    def check(self, draft_text: str, target_text: str, context_text: str = "") -> tuple[bool, str]:
        d, t = extract_numbers(draft_text), extract_numbers(target_text)
        dv, tv = d.values, t.values
        # what each side states or computes: a result is matched by either
        d_all, t_all = dv | set(d.implied), tv | set(t.implied)
        # 1. computed results must be matched by the other side (anywhere in its text)
        for side, mine, other in (("draft", d, t_all), ("target", t, d_all)):
            for alts in mine.results:
                if not any(_contains(other, v) for v in alts):
                    return False, f"{side} result {_fmt(alts[0])} missing from the other step"
        # 1b. so must what an expression computes, stated or not ("3/4 * 5000" vs "4/5 * 5000")
        for side, mine, other in (("draft", d, t_all), ("target", t, d_all)):
            for v in mine.implied:
                if not _contains(other, v):
                    return False, f"{side} computes {_fmt(v)}, which the other step does not"
        # 2. one-sided numbers only when they restate the context or are small constants
        context = extract_numbers(context_text).values if context_text else set()
        allowed = list(context) + self.constants
        for side, mine, other in (("draft", d, tv), ("target", t, dv)):
            for alts in mine.numbers:
                if any(_contains(other, v) for v in alts):
                    continue
                if any(_contains(allowed, v) for v in alts):
                    continue
                return False, f"{side} number {_fmt(alts[0])} not in the other step or the context"
        return True, "numbers consistent"


def prompt_text(prompt: Prompt) -> str:
    if prompt.messages is not None:
        return "\n".join(str(m.get("content", "")) for m in prompt.messages)
    return prompt.text or ""


def pair_context(pair: VerifyPair) -> str:
    """The question and the accepted steps before this position."""
    return prompt_text(pair.prompt) + "\n" + "".join(s.text for s in pair.prefix)


class GuardedVerifier:
    """Runs the guards first; only pairs that pass every guard go to the inner verifier.

    Guards: the numeric guard (this module; on by default) and the plan guard
    (verifier/plan.py: a plan or list step that drops, adds or merges an item; `plan=True`).
    Every verdict carries the name f"{inner.name}+numeric" (+"+plan"). Pairs a guard rejects get
    score 0.0 (the inner verifier never scored them) and the guard's reason as detail.
    """

    def __init__(self, inner, guard: NumericGuard | None = None, *, numeric: bool = True,
                 plan: bool = False) -> None:
        self.inner = inner
        self.guard = (guard or NumericGuard()) if numeric else None
        self.plan = PlanGuard() if plan else None
        self.name = inner.name + ("+numeric" if numeric else "") + ("+plan" if plan else "")

    def check(self, pair: VerifyPair) -> tuple[bool, str]:
        """The guards' ruling on one pair: (passes, the first rejecting guard's reason)."""
        if self.guard is not None:
            ok, reason = self.guard.check(pair.draft.text, pair.target.text, pair_context(pair))
            if not ok:
                return False, f"numeric: {reason}"
        if self.plan is not None:
            ok, reason = self.plan.check(pair.draft.text, pair.target.text, question_text(pair.prompt))
            if not ok:
                return False, reason
        return True, ""

    async def verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        return await prechecked(pairs, self._verify)

    async def _verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(pairs)
        passing: list[int] = []
        for i, p in enumerate(pairs):
            ok, reason = self.check(p)
            if ok:
                passing.append(i)
            else:
                verdicts[i] = Verdict(False, 0.0, self.name, reason)
        if passing:
            inner = await self.inner.verify([pairs[i] for i in passing])
            for i, v in zip(passing, inner):
                verdicts[i] = Verdict(v.accepted, v.score, self.name, v.detail)
        return verdicts  # type: ignore[return-value]
