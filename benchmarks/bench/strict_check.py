"""What a stricter check would have said about the drafts a run accepted.

A semantic verifier (embedding, judge, rater) accepts drafts that are not the target's text;
that is its point, and its risk. The bench wraps the run's verifier in `RecordingVerifier`,
which keeps every pair it ruled on, and `strict_review` then looks at each draft step the
answer actually used and asks two stricter checks about it against the target's own step at
that position:

- equality: the same text after whitespace folding (the verifier pre-check);
- the numeric guard (verifier/numeric.py): no computed result or one-sided number differs.

Counts of accepted drafts each would have rejected go next to accuracy in the report, with a
few examples in the JSON, so a verifier's speed is never read without its cost in fidelity.
"""
from __future__ import annotations

from orchestrator.types import Step, Verdict, VerifyPair
from verifier.exact import normalize
from verifier.numeric import NumericGuard, pair_context


class RecordingVerifier:
    """The run's verifier, unchanged, plus a record of every pair it ruled on (cleared per run)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.pairs: dict[int, list[tuple[VerifyPair, Verdict]]] = {}  # answer position -> pairs there

    def reset(self) -> None:
        self.pairs = {}

    async def verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        verdicts = await self.inner.verify(pairs)
        for p, v in zip(pairs, verdicts):
            self.pairs.setdefault(len(p.prefix), []).append((p, v))
        return verdicts


def _pair_for(step: Step, candidates: list[tuple[VerifyPair, Verdict]]) -> VerifyPair | None:
    """The accepted pair whose draft is this emitted step (the latest, if the same text was judged twice)."""
    for pair, verdict in reversed(candidates):
        if verdict.accepted and pair.draft.text == step.text:
            return pair
    return None


def strict_review(steps: list[Step], recorded: dict[int, list[tuple[VerifyPair, Verdict]]],
                  guard: NumericGuard | None = None, examples: int = 3) -> dict:
    """For the draft steps an answer used: how many equality and the numeric guard would reject."""
    guard = guard or NumericGuard()
    out = {"accepted_drafts": 0, "not_equal": 0, "guard_rejects": 0, "unmatched": 0, "examples": []}
    for i, step in enumerate(steps):
        if step.source != "draft":
            continue
        out["accepted_drafts"] += 1
        pair = _pair_for(step, recorded.get(i, []))
        if pair is None:  # not seen by this verifier (cannot happen in the bench; counted, not guessed)
            out["unmatched"] += 1
            continue
        equal = normalize(pair.draft.text) == normalize(pair.target.text)
        ok, why = guard.check(pair.draft.text, pair.target.text, pair_context(pair))
        out["not_equal"] += not equal
        out["guard_rejects"] += not ok
        if not ok and len(out["examples"]) < examples:
            out["examples"].append({"position": i, "draft": pair.draft.text, "target": pair.target.text,
                                    "guard": why, "verifier": step.verifier, "score": step.score})
    return out
