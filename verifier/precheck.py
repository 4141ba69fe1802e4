"""The cheap rulings in front of every semantic verifier (embedding, LLM judge, target score).

- A stop mismatch (one step ends the answer with EOS and the other does not, or one closes
  `</think>` and the other does not) is rejected: never equivalent, whatever the text says (the
  core applies the same rule to every verifier).
- Equal text after whitespace folding is accepted without calling the model, as the reference
  does before its judge (case is kept: "N" and "n" may be different quantities): an identical
  step then costs no judge or embedder call
  and cannot be rejected by a noisy score. It is also the one place the target-score rater
  uses the target's own step, which its prompt does not show.

Only the remaining pairs reach the model, in one call.
"""
from __future__ import annotations

from typing import Awaitable, Callable

from orchestrator.accept import stop_mismatch, stop_verdict
from orchestrator.types import Verdict, VerifyPair
from verifier.exact import normalize

#: the verifier name on verdicts the equality check gave
EQUAL = "equal"


def ruling(pair: VerifyPair) -> Verdict | None:
    """The pre-check's verdict for one pair, or None when the model must decide."""
    if stop_mismatch(pair.draft, pair.target):
        return stop_verdict(pair.draft, pair.target)
    if normalize(pair.draft.text) == normalize(pair.target.text):
        return Verdict(True, 1.0, EQUAL, "equal after whitespace folding")
    return None


async def prechecked(pairs: list[VerifyPair],
                     verify_rest: Callable[[list[VerifyPair]], Awaitable[list[Verdict]]]) -> list[Verdict]:
    """Verdicts for `pairs`: the pre-check's where it rules, `verify_rest`'s for the others."""
    out = [ruling(p) for p in pairs]
    rest = [i for i, v in enumerate(out) if v is None]
    if rest:
        for i, v in zip(rest, await verify_rest([pairs[i] for i in rest])):
            out[i] = v
    return out  # type: ignore[return-value]
