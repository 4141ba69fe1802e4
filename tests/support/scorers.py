"""A scripted ChoiceScorer for the verifier layer's unit tests: fixed probabilities, and a
record of what it was asked (the judge's and rater's prompts are what those tests check)."""
from __future__ import annotations


class ScriptedScorer:
    """Returns `probs` for every prompt; `calls` keeps (prompts, choices) per call, `prompts`
    every prompt asked."""

    def __init__(self, probs: list[float]) -> None:
        self.probs = probs
        self.calls: list[tuple[list, list[str]]] = []
        self.prompts: list = []

    async def choice_probs(self, prompts, choices):
        self.calls.append((prompts, choices))
        self.prompts += prompts
        return [list(self.probs) for _ in prompts]
