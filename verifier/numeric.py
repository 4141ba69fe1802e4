"""Numeric equivalence: what a step computes and states, compared with the target's step.

Embedding similarity is blind to arithmetic ("48/2 = 24" vs "48/2 = 25" scores 0.986 with
all-MiniLM-L6-v2), and so are small judges, so every semantic verifier runs behind this guard.
It only ever *rejects*, with one exception that is the inner verifier's to use: a pair whose
steps compute and state the same results (`Comparison.agreed`) may be accepted at a lower
similarity than a step without numbers needs (GuardedVerifier, `agreed_threshold`).

What a step says, read from its text (`read_step`):

* quantities: every number it states, as a value (fractions are values: "2/3" is 2/3, not a 2
  and a 3), with its sign ("x = -3"), its unit when it has a measurement unit ("30 km", "5 hours",
  "$12"; a distance per time is a speed: "30 mph" is "30 miles per hour"), whether it is money,
  and a direction when it is a comparative ("12 more", "12 fewer", "5 years older"). Words
  count: number words up to the thousands, "half", "a third", "two thirds", "three quarters",
  "twice", "double", "triple", "dozen", "percent".
* computations: the value of every piece of arithmetic it writes ("48 / 2", "3/4 * 5000",
  "180 + 0.5 x 180", "2/3 of his 48 apples", "half of 18", "3 times as many as 12"), units and
  LaTeX dropped, whether or not an "= result" follows.
* results: what it states as a result: the number after "=" when no operator follows ("= 48 +
  24 = 72": 72), "\\boxed{72}", "#### 72", and final-answer statements ("The answer is 48.").

How two steps are compared, symmetrically (`NumericGuard.compare`):

1. Every result of either step must be stated by the other (same value, sign and unit): as a
   number it writes, not only as the value of arithmetic it sets up. A step that writes
   "4/7 x 28" where the other writes "4/7 x 28 = 16" stops before the result; one that writes
   "= 16" where the other stops runs on past it. Either changes what the answer has computed at
   that point (docs/verifiers.md counts both as not equivalent).
2. So must every computation's value: "3/4 * 5000" and "4/5 * 5000" name numbers that are all
   in the question but compute 3750 and 4000.
3. The same value with a conflicting unit or direction ("30 km" against "30 miles", "12 more"
   against "12 fewer") is rejected, and so is another number in the same place of the two
   steps (the same two words before it and the same words after it, or none after it on its
   line: "Marcus had 30 pebbles" against "Marcus had 18 pebbles", however often either step
   uses 30 or 18 elsewhere), and so is a comparison turned around ("6 fewer white socks than"
   against "how many more white socks ... than").
4. A quantity of one step that the other does not state (and that is not an operand of a
   computation, whose value rule 2 already matched) is *unmatched*. When both steps have
   unmatched quantities, one states something where the other states something else: a
   substitution ("in May she sold 48 clips" for 24), a sign, a fraction ("2/3 of" for "1/3 of"),
   a word number ("twice" for "three times"), a unit ("30 km" for "30 miles"), money ("$1,235"
   for "$1,234.50") or a direction ("12 more" for "12 fewer"): reject, whether or not both
   numbers occur in the question. When only one step has unmatched quantities, they must be
   restated givens (in the question or the earlier steps) or small constants (0-12,
   24, 60, 100, 1/2, ...), else the step uses a value the other does not: reject.

Values compare exactly when both are integers, money exactly to the cent ("$1,235" is not
"$1,234.50"), other non-integers with a relative tolerance of 1e-3 ("3.33" matches 10/3, "3.3"
does not); a percentage may be read as 12 or 0.12. GSM8K calculator annotations "<<48/2=24>>"
are dropped (they repeat the visible calculation), list labels ("Step 3:", "2.") and ordinals
("1st") are not quantities.
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

# --- text normalisation ----------------------------------------------------------------------

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
          "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUES = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
# "one" as a pronoun ("one of them", "each one") is not a quantity
_WORD_RE = re.compile(
    r"\b(" + "|".join(_TENS) + r")[- ](" + "|".join(_UNITS[1:10]) + r")\b|"
    r"(?<!\beach )(?<!\bthe )(?<!\bno )(?<!\bany )\b(" + "|".join(_WORD_VALUES) + r")\b(?! of\b)",
    re.IGNORECASE)
_SCALE_RE = re.compile(r"\b(\d+|a|one)\s+(hundred|thousand|million)\b", re.IGNORECASE)
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_DENOMINATORS = {"half": 2, "halve": 2, "third": 3, "quarter": 4, "fourth": 4, "fifth": 5, "sixth": 6,
                 "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10}
# "a third", "one quarter", "two thirds", "3 fifths"; not "the third tank" (an ordinal)
_FRACTION_WORDS = re.compile(r"\b(a|an|one|\d+)[\s-]+(" + "|".join(_DENOMINATORS) + r")s?\b", re.IGNORECASE)
_HALF = re.compile(r"\bhalf\b", re.IGNORECASE)
_MULTIPLIERS = [(re.compile(r"\b(?:twice|double[sd]?|doubling)\b", re.IGNORECASE), "2 times"),
                (re.compile(r"\b(?:thrice|triple[sd]?|tripling)\b", re.IGNORECASE), "3 times"),
                (re.compile(r"\b(?:quadruple[sd]?)\b", re.IGNORECASE), "4 times")]
_DOZEN = re.compile(r"\b(?:(\d+)|an?)\s+dozens?\b|\bdozen\b", re.IGNORECASE)

_LATEX = [
    (re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"), r" (\1)/(\2) "),
    (re.compile(r"\\boxed\s*\{([^{}]*)\}"), r" = \1 "),
    (re.compile(r"\\(?:text|mathrm|textbf|mathbf|operatorname)\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\\times|\\cdot|×|·|∗"), " * "),
    (re.compile(r"\\div|÷"), " / "),
    (re.compile(r"\\approx|≈|\\simeq|\\Rightarrow|⇒"), " = "),
    (re.compile(r"\{,\}|\\,"), ","),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\\$"), "$"),
    (re.compile(r"\\left|\\right"), " "),
    (re.compile(r"\\[()\[\]]"), " "),
]
_CALC_ANNOTATION = re.compile(r"<<[^<>]*>>")
_LABELS = re.compile(r"\bstep\s+\d+\b|^\s*(?:\*\*)?\d+[.)]\s+(?=\D)|(?<![\w.])\d+(?:st|nd|rd|th)\b",
                     re.IGNORECASE | re.MULTILINE)


def normalize_math(text: str) -> str:
    """Rewrite LaTeX, GSM8K annotations and prose number words into plain ASCII arithmetic."""
    text = _CALC_ANNOTATION.sub(" ", text)
    text = text.replace("####", " = ")
    for pattern, repl in _LATEX:
        text = pattern.sub(repl, text)
    text = re.sub(r"\(\s*(\d+(?:\.\d+)?)\s*\)", r"\1", text)  # "(3)/(4)" from \frac -> "3/4"
    text = _LABELS.sub(" ", text)
    text = text.replace("−", "-").replace("–", "-").replace("$-", "-$")
    text = re.sub(r"\bpercent\b", "%", text, flags=re.IGNORECASE)

    def word(m: re.Match) -> str:
        if m.group(3):
            return str(_WORD_VALUES[m.group(3).lower()])
        return str(_WORD_VALUES[m.group(1).lower()] + _WORD_VALUES[m.group(2).lower()])

    text = _WORD_RE.sub(word, text)
    text = _SCALE_RE.sub(lambda m: str((1 if not m.group(1).isdigit() else int(m.group(1))) * _SCALES[m.group(2).lower()]),
                         text)

    def fraction(m: re.Match) -> str:
        n = 1 if not m.group(1).isdigit() else int(m.group(1))
        return f"{n}/{_DENOMINATORS[m.group(2).lower()]}"

    text = _FRACTION_WORDS.sub(fraction, text)
    text = _HALF.sub("1/2", text)
    for pattern, repl in _MULTIPLIERS:
        text = pattern.sub(repl, text)
    text = _DOZEN.sub(lambda m: str(12 * int(m.group(1))) if m.group(1) else "12", text)
    return text


# --- what a step says --------------------------------------------------------------------

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.,/])(?P<num>{_NUM})(?:\s*/\s*(?P<den>{_NUM}))?(?!\d|[.,]\d)(?P<pct>\s?%)?")
_RESULT_RE = re.compile(
    rf"=\s*(?P<sign>-)?\s*\$?\s*(?P<num>{_NUM})(?:\s*/\s*(?P<den>{_NUM}))?(?P<pct>\s?%)?"
    # an operator after it, past a unit ("= 30 mph * 3 hours"), makes it the start of an expression
    rf"(?P<after>(?:\s*[A-Za-z]+(?:/[A-Za-z]+)?)?\s*[-+*/^x]\s*[\d(.$])?")
_ANSWER_RE = re.compile(
    rf"\b(?:final\s+)?answer\s*(?:is|:|=|would be|will be)\s*:?\s*[*_]*\s*(?P<sign>-)?\s*\$?\s*(?P<num>{_NUM})"
    rf"(?:\s*/\s*(?P<den>{_NUM}))?(?P<pct>\s?%)?", re.IGNORECASE)

#: measurement units, by their spellings; count nouns ("clips", "apples") are not units
_UNIT_NAMES = {
    "dollar": "dollars dollar usd", "cent": "cents cent", "euro": "euros euro",
    "km": "km kms kilometer kilometers kilometre kilometres", "m": "m meter meters metre metres",
    "cm": "cm centimeter centimeters", "mm": "mm millimeter millimeters", "mile": "mile miles mi",
    "foot": "foot feet ft", "inch": "inch inches", "yard": "yard yards yd",
    "second": "second seconds sec secs s", "minute": "minute minutes min mins", "hour": "hour hours hr hrs h",
    "day": "day days", "week": "week weeks", "month": "month months", "year": "year years yr yrs",
    "kg": "kg kilogram kilograms", "g": "g gram grams", "pound": "pound pounds lb lbs", "ounce": "ounce ounces oz",
    "ton": "ton tons", "liter": "liter liters litre litres l", "ml": "ml milliliter milliliters",
    "gallon": "gallon gallons gal", "quart": "quart quarts", "cup": "cup cups", "pint": "pint pints",
    "mile/hour": "mph", "km/hour": "kph kmh", "degree": "degree degrees",
}
_UNIT_OF = {spelling: unit for unit, names in _UNIT_NAMES.items() for spelling in names.split()}
# a distance per unit of time is a speed: "30 miles/hour", "30 miles per hour", "30 miles an hour" are "30 mph"
_PER_TIME = re.compile(r"\s*(?:\\?\s*)?[A-Za-z]+\s*(?:/|\s+per\s+|\s+an?\s+)\s*(second|sec|s|minute|min|hour|hr|h)\b",
                       re.IGNORECASE)
_DISTANCES = frozenset("km m cm mm mile foot inch yard".split())
_UP = frozenset("more greater larger bigger longer older taller higher heavier faster extra increase increased "
                "gain gained added above over plus".split())
_DOWN = frozenset("fewer less smaller shorter younger lower lighter slower decrease decreased lost loss below "
                  "under minus".split())
_COMPARISON = re.compile(r"\b(" + "|".join(sorted(_UP | _DOWN)) + r")\s+((?:[a-z]+\s+){0,5}?)than\b", re.IGNORECASE)
_AFTER_WORDS = re.compile(r"\s*(?:\\?\s*)?([A-Za-z]+)(?:\s+([A-Za-z]+))?(?:\s+([A-Za-z]+))?")


@dataclass(frozen=True)
class Quantity:
    """One stated value: `values` holds its readings ("12%": 12 or 0.12)."""

    values: tuple[Fraction, ...]
    text: str
    unit: str | None = None
    money: bool = False
    direction: str | None = None  # "up" (more, older, ...) or "down" (fewer, younger, ...)
    operand: bool = False  # part of a computation (its value is what is compared)
    slot: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # the two words before it, three after

    @property
    def value(self) -> Fraction:
        return self.values[0]


@dataclass
class StepFacts:
    quantities: list[Quantity] = field(default_factory=list)
    computed: list[Quantity] = field(default_factory=list)
    results: list[Quantity] = field(default_factory=list)

    def available(self) -> list[Quantity]:
        """Everything the step states or computes: what the other step's values are looked up in."""
        return self.quantities + self.computed + self.results

    def stated(self) -> list[Quantity]:
        """The numbers the step writes (not the values of arithmetic it only sets up)."""
        return self.quantities + self.results

    @property
    def values(self) -> set[Fraction]:
        return {v for q in self.available() for v in q.values}


def _fraction(num: str, den: str | None) -> Fraction | None:
    value = Fraction(num.replace(",", ""))
    if den is not None:
        d = Fraction(den.replace(",", ""))
        if d == 0:
            return None
        value /= d
    return value


def _signed_before(text: str, start: int) -> bool:
    """True when the number at `start` carries a unary minus ("= -3", "is -3", "(-3"), not a
    binary one ("10 - 3")."""
    before = text[:start].rstrip().removesuffix("$").rstrip()
    if not before.endswith("-"):
        return bool(re.search(r"\bnegative\s*$", before, re.IGNORECASE))
    rest = before[:-1].rstrip()
    if not rest or rest[-1] in "=(:[,{":
        return True
    word = re.search(r"([A-Za-z]+)$", rest)
    return bool(word and word.group(1).lower() in ("is", "be", "was", "are", "equals", "of", "to", "by", "at", "gives",
                                                   "with", "has", "had", "have"))


def _attributes(text: str, start: int, end: int) -> tuple[str | None, bool, str | None]:
    """(unit, money, direction) of the number at text[start:end]."""
    before = text[max(0, start - 3):start]
    money = "$" in before
    unit, direction = None, None
    m = _AFTER_WORDS.match(text, end)
    if m:
        words = [w.lower() for w in m.groups() if w]
        if words and words[0] in _UNIT_OF:
            unit = _UNIT_OF[words[0]]
            speed = _PER_TIME.match(text, end) if unit in _DISTANCES else None
            if speed:
                unit += "/" + _UNIT_OF[speed.group(1).lower()]
        for w in words[:3]:
            if w in _UP or w in _DOWN:
                direction = "up" if w in _UP else "down"
                break
    ahead = re.search(r"\b(more|less|fewer|greater)\s+than\s*\$?\s*$", text[max(0, start - 20):start], re.IGNORECASE)
    if ahead and direction is None:
        direction = "up" if ahead.group(1).lower() in _UP else "down"
    if unit in ("dollar", "cent", "euro"):
        money = True
    return unit, money, direction


_SLOT_WORD = re.compile(r"[a-z]+")


def _slot(text: str, start: int, end: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The two words before a number and the three after it (after its unit or direction word), on
    its line ("Marcus had _ pebbles. He skipped"): where the other step has another number in the
    same place, one was substituted."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    left = _SLOT_WORD.findall(text[line_start:start].lower())[-2:]
    right = _SLOT_WORD.findall(text[end:line_end if line_end >= 0 else len(text)].lower())
    # the unit and the direction are compared as attributes ("16 grams" is in the place of "16 ounces")
    while right and (right[0] in _UNIT_OF or right[0] in _UP or right[0] in _DOWN):
        right = right[1:]
    if not right:
        # a number that ends its line has its place in the prose before it ("both sides by _:"),
        # not across arithmetic ("8 hours/day * 7 days/week = _ hours/week" has no place)
        prose = re.split(r"[-=+*/]", text[line_start:start])[-1]
        left = _SLOT_WORD.findall(prose.lower())[-2:]
    return tuple(left), tuple(right[:3])


def _fold(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def same_slot(q: Quantity, p: Quantity) -> bool:
    """Two numbers in the same place of two steps: the same two words before them and the same
    (up to three) words after them on their lines, or both the last word of their lines ("dividing
    both sides by 0.4:")."""
    (ql, qr), (pl, pr) = [(tuple(_fold(w) for w in left), tuple(_fold(w) for w in right))
                          for left, right in (q.slot, p.slot)]
    return len(ql) == 2 and ql == pl and qr == pr


def _readings(value: Fraction, pct: bool) -> tuple[Fraction, ...]:
    return (value, value / 100) if pct else (value,)


# --- computations ------------------------------------------------------------------------------

# "x" multiplies only between spaces before a number ("4 x 5"); in "2x + 5" it is a variable
_TOKEN = re.compile(rf"(?P<num>{_NUM})(?P<pct>\s?%)?|(?P<op>[-+*/]|(?<=\s)x(?=\s+[\d(.$]))|(?P<lp>\()|(?P<rp>\))"
                    rf"|(?P<skip>\s+|\$)|(?P<other>.)", re.DOTALL)
# a unit or noun right after a number inside arithmetic ("100 dollars/day * 5 days"); not "x"
_UNIT_AFTER_NUMBER = re.compile(r"(?<=[\d%])\s*(?!x\b)[A-Za-z]+(?:/[A-Za-z]+)?")
_OF = re.compile(rf"(?P<a>{_NUM})(?:\s*/\s*(?P<den>{_NUM}))?(?P<pct>\s?%)?\s+of\s+"
                 rf"(?:(?:the|his|her|their|its|a|an|these|those|this|that|all|each|them|which|total|remaining)\s+){{0,2}}"
                 rf"\$?\s*(?P<b>{_NUM})")
_TIMES = re.compile(rf"(?P<a>{_NUM})\s+times\s+(?:as\s+(?:many|much|long|big|old|large|tall|far|fast)\s+"
                    rf"(?:\w+\s+)?as\s+(?:(?:the|his|her|their|its|a|an)\s+)?(?:\w+\s+)?)?\$?\s*(?P<b>{_NUM})")


def _evaluate(tokens: list[tuple[str, str]], division: bool = False) -> Fraction | None:
    """The value of one run of number/operator/parenthesis tokens, or None when it is not a
    computation: fewer than two numbers, no operator, or a lone "a/b" (a fraction is a value),
    unless `division` (units stood between: "400 calories / 80 calories per orange")."""
    while tokens and tokens[0][0] in ("op", "rp"):
        tokens = tokens[1:]
    while tokens and tokens[-1][0] in ("op", "lp"):
        tokens = tokens[:-1]
    core = [(k, v) for k, v in tokens if k in ("num", "op")]
    if sum(k == "num" for k, _ in core) < 2 or not any(k == "op" for k, _ in core):
        return None
    if [k for k, _ in core] == ["num", "op", "num"] and core[1][1] == "/" and not division:
        return None
    depth, expr = 0, []
    for kind, value in tokens:
        if kind == "rp" and depth == 0:
            continue  # an unmatched ")" belongs to the prose around the expression
        depth += (kind == "lp") - (kind == "rp")
        if kind == "num":
            pct = value.endswith("%")
            number = value.rstrip("% ").replace(",", "")
            expr.append(f"(Fraction('{number}')/100)" if pct else f"Fraction('{number}')")
        elif kind == "op":
            expr.append("*" if value == "x" else value)
        else:
            expr.append(value)
    expr += [")"] * depth
    try:
        value = eval("".join(expr), {"Fraction": Fraction, "__builtins__": {}})  # noqa: S307 - tokens only
    except (SyntaxError, ZeroDivisionError, TypeError, ValueError, OverflowError):
        return None
    return value if isinstance(value, Fraction) else None


def computations(text: str) -> list[tuple[Fraction, str, int, int]]:
    """(value, text, start, end) of the arithmetic a normalised step writes: runs of numbers and
    operators (units and nouns after numbers skipped, "12%" read as 12/100), "a/b of N" and
    "N times (as many as) M" products. A lone "a/b" is a value, not a computation."""
    out: list[tuple[Fraction, str, int, int]] = []
    for m in list(_OF.finditer(text)) + list(_TIMES.finditer(text)):
        a = _fraction(m.group("a"), m.groupdict().get("den"))
        if a is None:
            continue
        if m.groupdict().get("pct"):
            a /= 100
        elif m.re is _OF and a.denominator == 1 and "." not in m.group("a"):
            continue  # "3 of the 5 boxes" is a count, not a product
        out.append((a * Fraction(m.group("b").replace(",", "")), m.group(), m.start(), m.end()))
    # the same offsets as `text`: units and "times" become blanks of the same length
    plain = re.sub(r"\btimes\b", "*    ", text)
    plain = _UNIT_AFTER_NUMBER.sub(lambda m: " " * len(m.group()), plain)
    run: list[tuple[str, str]] = []
    start = end = 0

    def flush() -> None:
        value = _evaluate(run, division=bool(re.search(r"[A-Za-z]", text[start:end])))
        if value is not None:
            out.append((value, text[start:end].strip(), start, end))

    for m in _TOKEN.finditer(plain):
        kind = m.lastgroup
        if kind == "pct":
            kind = "num"
        if kind == "skip":
            continue
        if kind == "other":
            flush()
            run = []
            continue
        if not run:
            start = m.start()
        end = m.end()
        run.append((kind, m.group()))
    flush()
    return out


def read_step(text: str) -> StepFacts:
    """What one step states, computes and gives as results (see the module docstring)."""
    text = normalize_math(text)
    facts = StepFacts()
    calc = computations(text)
    for m in _NUMBER_RE.finditer(text):
        value = _fraction(m.group("num"), m.group("den"))
        if value is None:
            continue
        if _signed_before(text, m.start()):
            value = -value
        unit, money, direction = _attributes(text, m.start(), m.end())
        operand = any(a <= m.start() < b for _, _, a, b in calc)
        facts.quantities.append(Quantity(_readings(value, bool(m.group("pct"))), m.group().strip(), unit, money,
                                         direction, operand, _slot(text, m.start(), m.end())))
    for value, expr, _, _ in calc:
        facts.computed.append(Quantity((value,), expr))
    for pattern in (_RESULT_RE, _ANSWER_RE):
        for m in pattern.finditer(text):
            if m.groupdict().get("after"):
                continue  # "= 48 + 24 = 72": an expression, its result comes later in the chain
            value = _fraction(m.group("num"), m.group("den"))
            if value is None:
                continue
            if m.group("sign"):
                value = -value
            unit, money, direction = _attributes(text, m.start("num"), m.end())
            money = money or "$" in m.group()
            facts.results.append(Quantity(_readings(value, bool(m.group("pct"))), m.group().strip(), unit, money,
                                          direction))
    return facts


# --- comparing ---------------------------------------------------------------------------------

def close(a: Fraction, b: Fraction, money: bool = False) -> bool:
    """Equal values: integers exactly, money to the cent, other values within 1e-3 relative."""
    if a == b:
        return True
    if money:
        return round(a * 100) == round(b * 100)
    if a.denominator == 1 and b.denominator == 1:
        return False
    return math.isclose(float(a), float(b), rel_tol=1e-3, abs_tol=1e-9)


def matches(q: Quantity, other: Quantity) -> bool:
    """Same value (any reading), and no conflict of unit or direction."""
    if q.unit and other.unit and q.unit != other.unit:
        return False
    if q.direction and other.direction and q.direction != other.direction:
        return False
    money = q.money or other.money
    return any(close(a, b, money) for a in q.values for b in other.values)


def _found(q: Quantity, pool: list[Quantity]) -> bool:
    return any(matches(q, p) for p in pool)


def _conflict(q: Quantity, pool: list[Quantity]) -> Quantity | None:
    """A quantity of `pool` with q's value but another unit or direction, when none of the pool's
    quantities with that value agrees with q ("30 km" against "30 miles", "12 more" against "12 fewer")."""
    plain = Quantity(q.values, q.text, money=q.money)
    same_value = [p for p in pool if matches(plain, Quantity(p.values, p.text, money=p.money))]
    # a bare "5" (an operand, "(10 - 5) days") says nothing about the unit: when the other step
    # writes the value with a unit or direction too, those decide ("5 hours" against "5 days")
    telling = [p for p in same_value if (q.unit is None or p.unit) and (q.direction is None or p.direction)]
    if not same_value or any(matches(q, p) for p in telling or same_value):
        return None
    return (telling or same_value)[0]


def _substituted(q: Quantity, mine: StepFacts, theirs: StepFacts) -> Quantity | None:
    """The other step's number in q's place, when it is another number: neither step has the
    other's value in that place ("Marcus had 30 pebbles" against "Marcus had 18 pebbles", however
    often either step uses 30 or 18 elsewhere)."""
    peers = [p for p in theirs.quantities if same_slot(q, p)]
    if not peers or any(matches(q, p) for p in peers):
        return None
    for p in peers:
        if not any(matches(p, r) for r in mine.quantities if same_slot(p, r)):
            return p
    return None


def _fmt(q: Quantity) -> str:
    extra = [x for x in (q.unit, "money" if q.money and q.unit is None else None, q.direction) if x]
    text = "-" + q.text if q.value < 0 and not q.text.startswith("-") else q.text  # a unary minus read before it
    return repr(text) + (f" ({', '.join(extra)})" if extra else "")


_CONSTANTS = [Fraction(n) for n in (*range(13), 24, 30, 52, 60, 100, 365, 1000)] + [
    Fraction(1, 2), Fraction(1, 3), Fraction(2, 3), Fraction(1, 4), Fraction(3, 4)]


@dataclass
class Comparison:
    ok: bool
    reason: str
    #: both steps compute or state results and every one of them agrees (the inner verifier may
    #: then accept at a lower similarity: GuardedVerifier's agreed_threshold)
    agreed: bool = False


class NumericGuard:
    """compare(draft, target, context) -> Comparison; check(...) -> (ok, reason). Rules: the
    module docstring."""

    def __init__(self, constants: list[Fraction] | None = None) -> None:
        self.constants = list(_CONSTANTS if constants is None else constants)

    def check(self, draft_text: str, target_text: str, context_text: str = "") -> tuple[bool, str]:
        c = self.compare(draft_text, target_text, context_text)
        return c.ok, c.reason

    def compare(self, draft_text: str, target_text: str, context_text: str = "") -> Comparison:
        d, t = read_step(draft_text), read_step(target_text)
        d_pool, t_pool = d.available(), t.available()
        sides = (("draft", d, t_pool), ("target", t, d_pool))
        facing = (("draft", d, t), ("target", t, d))
        # 1. results must be stated by the other step, and 2. what each computation comes to
        # stated or computed by it
        for side, mine, theirs in facing:
            for q in mine.results:
                if _found(q, theirs.stated()):
                    continue
                if _found(q, theirs.computed):
                    return Comparison(False, f"{side} states the result {_fmt(q)}, which the other step sets up "
                                             "but does not state")
                return Comparison(False, f"{side} result {_fmt(q)} is not in the other step")
        for side, mine, other in sides:
            for q in mine.computed:
                if not _found(q, other):
                    return Comparison(False, f"{side} computes {_fmt(q)} = {_value(q)}, which the other step does not")
        # 3. the same value with a conflicting unit or direction, and another number in the same place
        for side, mine, theirs in facing:
            for q in mine.quantities:
                conflict = _conflict(q, theirs.stated())  # computed values carry no unit
                if conflict is not None:
                    return Comparison(False, f"{side} states {_fmt(q)} where the other step states {_fmt(conflict)}")
                twin = _substituted(q, mine, theirs)
                if twin is not None:
                    return Comparison(False, f"{side} states {_fmt(q)} where the other step states {_fmt(twin)} "
                                             f"({' '.join(q.slot[0])} _ {' '.join(q.slot[1])})")
        # ... and a comparison turned around: "6 fewer white socks than" against "how many more white socks ... than"
        turned = _turned_comparison(draft_text, target_text)
        if turned:
            return Comparison(False, turned)
        # 4. quantities stated on one side only
        unmatched = {side: [q for q in mine.quantities if not q.operand and not _found(q, other)]
                     for side, mine, other in sides}
        if unmatched["draft"] and unmatched["target"]:
            return Comparison(False, f"draft states {', '.join(_fmt(q) for q in unmatched['draft'])} where the "
                                     f"target states {', '.join(_fmt(q) for q in unmatched['target'])}")
        if unmatched["draft"] or unmatched["target"]:
            allowed = (read_step(context_text).available() if context_text else []) + [
                Quantity((c,), str(c)) for c in self.constants]
            for side, qs in unmatched.items():
                for q in qs:
                    if not _found(Quantity(tuple(abs(v) for v in q.values), q.text, q.unit, q.money), allowed):
                        return Comparison(False, f"{side} states {_fmt(q)}, which is neither in the other step nor a "
                                                 "given of the problem")
        agreed = bool((d.results or d.computed) and (t.results or t.computed))
        return Comparison(True, "same results" if agreed else "numbers consistent", agreed)


def comparisons(text: str) -> set[tuple[str, str]]:
    """(direction, the first word compared) of each "more/fewer/taller ... than" in a step:
    "6 fewer white socks than" gives ("down", "white"), "50% taller than" ("up", "")."""
    out = set()
    for m in _COMPARISON.finditer(text):
        words = m.group(2).split()
        out.add(("up" if m.group(1).lower() in _UP else "down", _fold(words[0].lower()) if words else ""))
    return out


def _turned_comparison(draft_text: str, target_text: str) -> str | None:
    """A reason when the steps compare the same thing in opposite directions and never in the same one."""
    d, t = comparisons(draft_text), comparisons(target_text)
    for direction, word in d:
        other = "down" if direction == "up" else "up"
        if (other, word) in t and (direction, word) not in t:
            return f"draft compares {word or 'a value'} {direction} where the target compares it {other}"
    return None


def _value(q: Quantity) -> str:
    v = q.value
    return str(v.numerator) if v.denominator == 1 else f"{float(v):g}"


def extract_numbers(text: str) -> StepFacts:
    """The facts of one step (kept under its old name for callers that read values)."""
    return read_step(text)


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

    `agreed_threshold`: where the numeric guard finds that both steps compute and state the
    same results, the inner verifier's score only has to reach this (lower) threshold; the
    agreement on every result is itself strong evidence (measured on the labelled pairs,
    verifier/factory.py). None: the inner verifier's own verdict stands.
    """

    def __init__(self, inner, guard: NumericGuard | None = None, *, numeric: bool = True,
                 plan: bool = False, agreed_threshold: float | None = None) -> None:
        self.inner = inner
        self.guard = (guard or NumericGuard()) if numeric else None
        self.plan = PlanGuard() if plan else None
        self.agreed_threshold = agreed_threshold if numeric else None
        self.name = inner.name + ("+numeric" if numeric else "") + ("+plan" if plan else "")

    def check(self, pair: VerifyPair) -> tuple[bool, str]:
        """The guards' ruling on one pair: (passes, the first rejecting guard's reason)."""
        ok, reason, _ = self.rule(pair)
        return ok, reason

    def rule(self, pair: VerifyPair) -> tuple[bool, str, bool]:
        """(passes, the first rejecting guard's reason, the steps state the same results)."""
        agreed = False
        if self.guard is not None:
            c = self.guard.compare(pair.draft.text, pair.target.text, pair_context(pair))
            if not c.ok:
                return False, f"numeric: {c.reason}", False
            agreed = c.agreed
        if self.plan is not None:
            ok, reason = self.plan.check(pair.draft.text, pair.target.text, question_text(pair.prompt))
            if not ok:
                return False, reason, False
        return True, "", agreed

    def decide(self, inner: Verdict, agreed: bool) -> Verdict:
        """The verdict on a pair the guards passed, from the inner verifier's."""
        if not inner.accepted and agreed and self.agreed_threshold is not None and inner.score >= self.agreed_threshold:
            return Verdict(True, inner.score, self.name, f"{inner.detail} (same results: >= {self.agreed_threshold:g})")
        return Verdict(inner.accepted, inner.score, self.name, inner.detail)

    async def verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        return await prechecked(pairs, self._verify)

    async def _verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(pairs)
        passing: list[tuple[int, bool]] = []
        for i, p in enumerate(pairs):
            ok, reason, agreed = self.rule(p)
            if ok:
                passing.append((i, agreed))
            else:
                verdicts[i] = Verdict(False, 0.0, self.name, reason)
        if passing:
            inner = await self.inner.verify([pairs[i] for i, _ in passing])
            for (i, agreed), v in zip(passing, inner):
                verdicts[i] = self.decide(v, agreed)
        return verdicts  # type: ignore[return-value]
