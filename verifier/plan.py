"""Plan guard: reject a drafted plan or list step that drops, adds or merges an item.

A plan step ("To find the total we need: 1. the cost per day 2. the cost per week ...") has
no numbers, so the numeric guard cannot see it, and a plan with one item left out embeds
almost exactly like the full one (all-MiniLM-L6-v2 accepted 10 of the 12 dropped-item plans
of the labelled pairs, at cosine 0.87-0.99: docs/verifiers.md). Accepting it is the
costliest kind of wrong draft: the target then follows the shorter plan and leaves that
computation out of the answer. Three rules, about structure, operations and the problem's words,
none about style, and all only for steps that compute nothing (no "= 24", no "3/4 * 7000", no
final answer on either side): a step that computes is the numeric guard's, which sees its
numbers (its bullets are working, not plan items).

1. Items: lines that open with a list marker ("1.", "2)", "-", "*", "•", "Step 3:") are the
   step's items. When either side has items, both must have the same number of them: an
   item dropped, added or two merged into one all change the count.
2. Operations: the arithmetic a plan names, folded to add, subtract, multiply, divide ("then
   sum these", "the difference", "the remaining days", "the average") must be the same on both
   sides: dropping "and then sum these amounts" removes an item without touching any of the
   question's words.
3. The problem's words: a word of the question (a quantity's name: "week", "stamps",
   "discount") that one step mentions and the other does not: in a plan, that is the item
   that went missing. Words are compared after folding case, a plural "s" and rate adjectives ("weekly" is "week"); short
   and common words are ignored.
4. Item by item: when both sides list their items, the items must name the same words of the
   problem, item for item in any order (a plan listing the same items in another order is the
   same plan). The count and the whole step's words survive two items rewritten as one plus a
   filler ("1. the clips sold in April and May 2. the total ... 3. add them" for "1. April
   2. May 3. add them", accepted at cosine 0.97 before this rule). Names are left out of this
   comparison ("he" for "James" in the second item is the same item); they still count in rule 3.

A draft that names nothing at all (no item, no operation, no word of the problem: "Let's solve
this step by step.") commits to no plan and cannot drop an item: it passes, and the target's
plan follows in its own next step.

Like the numeric guard it only ever rejects; a pair that passes still needs the inner
verifier's approval.
"""
from __future__ import annotations

import re

_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•]|step\s+\d+\s*[:.)])\s+\S", re.IGNORECASE | re.MULTILINE)
_WORD = re.compile(r"[a-z]+")
_RESULT = re.compile(r"=\s*\$?\s*\d")
# the LaTeX spellings of an operation (the numeric guard normalises far more; this only needs to
# see that arithmetic happens)
_TIMES = re.compile(r"\\times|\\cdot|\\div|×|÷|·")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
# "48 / 2", "3 * 4", "12 - 5"; not "4/7 of her stamps", a fraction named in a plan
_OPERATION = re.compile(r"\d\s*[-+*x]\s*\(?\$?\d|\d\s+/\s*\(?\$?\d")
# words a question shares with every step that talks about it, and filler
_COMMON = frozenset("""
a about above after again all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers him his how i if in into is it its itself just let me more most much my no nor
not now of off on once only or other our out over own same she should so some such than that the their
them then there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your one two three four five six seven eight nine ten
many every total number amount altogether together left remaining first second last next how much
find determine calculate compute figure need know get got give given make made take took use used
per times time step steps problem answer
""".split())


def plan_items(text: str) -> int:
    """How many list items the step has (lines opening with a list marker)."""
    return len(_ITEM.findall(text))


#: capitalised words of a question that are not names
_NOT_NAMES = frozenset("""january february march april may june july august september october november december
monday tuesday wednesday thursday friday saturday sunday""".split())


def _names(question: str) -> set[str]:
    """The question's names: words it always capitalises (not months and days)."""
    lower = set(re.findall(r"\b[a-z]+\b", question))  # whole words written in lower case somewhere
    return {_fold(w.lower()) for w in re.findall(r"\b[A-Z][a-z]+\b", question)
            if w.lower() not in lower and w.lower() not in _NOT_NAMES}


def item_texts(text: str) -> list[str]:
    """Each list item's text, from its marker to the next one (what precedes the first is not an item)."""
    starts = [m.start() for m in _ITEM.finditer(text)]
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


#: words that name an operation in a plan; a plan that drops its last "and then sum them" keeps
#: the question's words but loses the operation
_OPS = {w: op for op, words in {
    "add": "sum sums add adding added plus combine combined altogether",
    "subtract": "subtract subtracting difference minus remaining remain rest left less fewer",
    "multiply": "multiply multiplying multiplied product",
    "divide": "divide dividing divided average mean split ratio quotient",
}.items() for w in words.split()}
#: "daily cost" and "cost per day" name the same item
_RATES = {"daily": "day", "weekly": "week", "monthly": "month", "yearly": "year", "annually": "year",
          "annual": "year", "hourly": "hour"}


def _fold(word: str) -> str:
    word = _RATES.get(word, word)
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _words(text: str) -> set[str]:
    return {_fold(w) for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _COMMON}


def operations(text: str) -> set[str]:
    """The arithmetic a plan names ("then sum these", "find the difference", "the remaining days")."""
    return {_OPS[w] for w in _WORD.findall(text.lower()) if w in _OPS}


#: a final answer ("\boxed{15}", "#### 15", "The answer is 15"): the numeric guard's, never a plan
_ANSWER = re.compile(r"\\boxed\s*\{|####|\banswer\s+is\s*:?\s*\$?\s*-?\d", re.IGNORECASE)


def computes(text: str) -> bool:
    """True when the step does arithmetic or states a final answer: a result ("= 24"), an
    operation between numbers ("3/4 * 7000", LaTeX included), "\\boxed{24}", "The answer is 24"."""
    plain = _FRAC.sub(r"\1/\2", _TIMES.sub(" * ", text))
    return bool(_RESULT.search(plain) or _OPERATION.search(plain) or _ANSWER.search(text))


class PlanGuard:
    """check(draft, target, question) -> (ok, reason). See the module docstring for the rules."""

    def check(self, draft_text: str, target_text: str, question: str = "") -> tuple[bool, str]:
        if computes(draft_text) or computes(target_text):
            return True, "computes: left to the numeric guard"
        d_items, t_items = plan_items(draft_text), plan_items(target_text)
        if (d_items or t_items) and d_items != t_items:
            return False, f"plan: draft has {d_items} list items, target {t_items}"
        q = _words(question) if question else set()
        d_ops, t_ops = operations(draft_text), operations(target_text)
        if not (d_items or d_ops or _words(draft_text) & q):
            # "Let's solve this step by step.": names no item, no operation, nothing of the
            # problem; it commits to no plan, so it cannot leave an item out
            return True, "generic opening"
        if d_ops != t_ops:
            missing = sorted(t_ops - d_ops)
            return False, (f"plan: target plans to {', '.join(missing)} and the draft does not" if missing else
                           f"plan: draft plans to {', '.join(sorted(d_ops - t_ops))} and the target does not")
        if q:
            d, t = _words(draft_text) & q, _words(target_text) & q
            if d != t:
                return False, f"plan: {_differ(d, t)}"
            named = q - _names(question)
            d_items = sorted(sorted(_words(i) & named) for i in item_texts(draft_text))
            t_items = sorted(sorted(_words(i) & named) for i in item_texts(target_text))
            if d_items != t_items:
                return False, f"plan: the items name {_listed(d_items)} in the draft, {_listed(t_items)} in the target"
        return True, "plan consistent"


def _listed(items: list[list[str]]) -> str:
    return "; ".join(" ".join(words) or "-" for words in items)


def _differ(d: set[str], t: set[str]) -> str:
    """What the draft's problem words `d` lack or add against the target's `t`."""
    if t - d:
        return f"target mentions {', '.join(sorted(t - d))} and the draft does not"
    return f"draft mentions {', '.join(sorted(d - t))} and the target does not"
