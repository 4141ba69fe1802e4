"""The asynchronous rolling window's schedule, pinned with scripted engines.

Gates (events a scripted call waits on) make each property a matter of order, not speed: a
window that broke the property would wait forever, and `asyncio.wait_for` turns that into a
failure.
"""
from __future__ import annotations

import asyncio

from orchestrator.lookahead import Lookahead, LookaheadParams, derive_seed, generate, prefix_digest
from orchestrator.types import Prompt, SamplingParams
from tests.support.fakes import ScriptedEngine
from verifier.exact import ExactVerifier

TRUTH = ["A\n\n", "B\n\n", "C\n\n", "D\n\n", "E\n\n", "F\n\n", "G."]
PROMPT = Prompt(text="q")
HANG = 5.0  # seconds: a window that waits where it must not never finishes


class RecordingVerifier:
    """The exact verifier, recording the positions it was asked about (and a hook per call)."""

    name = "exact"

    def __init__(self, on_call=None) -> None:
        self.positions: list[list[int]] = []
        self.on_call = on_call

    async def verify(self, pairs):
        self.positions.append([len(p.prefix) for p in pairs])
        if self.on_call:
            self.on_call(self)
        return await ExactVerifier().verify(pairs)


def params(depth=3, **kw) -> LookaheadParams:
    return LookaheadParams(mode="lr", schedule="async", depth=depth, **kw)


async def test_pairs_are_judged_ahead_of_the_root():
    root_target = asyncio.Event()
    target = ScriptedEngine(TRUTH, gates={0: root_target})
    draft = ScriptedEngine(TRUTH)

    def release_root(v: RecordingVerifier) -> None:
        # the root's target step is held until the pairs at depths 1 and 2 have been judged
        if {1, 2} <= {pos for call in v.positions for pos in call}:
            root_target.set()

    verifier = RecordingVerifier(release_root)
    result = await asyncio.wait_for(generate(target, PROMPT, params(3), draft, verifier), HANG)
    assert result.text == "".join(TRUTH)
    assert verifier.positions[0] != [0]  # the first verdict was not the root's
    assert result.stats.accepted_steps >= 3


async def test_unfinished_draft_is_skipped_when_the_target_step_is_ready():
    never = asyncio.Event()
    target, draft = ScriptedEngine(TRUTH), ScriptedEngine(TRUTH, gates={0: never})  # first draft never ends
    result = await asyncio.wait_for(generate(target, PROMPT, params(3), draft, ExactVerifier()), HANG)
    assert result.text == "".join(TRUTH)
    assert result.steps[0].source == "target" and result.steps[0].verifier is None  # no verdict was taken
    assert draft.cancelled >= 1  # the unfinished draft was cancelled, not awaited
    assert draft.in_flight == 0


async def test_window_keeps_g_plus_one_target_steps_in_flight():
    g = 3
    root_target = asyncio.Event()
    target, draft = ScriptedEngine(TRUTH, gates={0: root_target}), ScriptedEngine(TRUTH)
    run = asyncio.ensure_future(generate(target, PROMPT, params(g), draft, ExactVerifier()))

    def requested() -> set[int]:
        return {pos for call in target.calls for pos, _ in call}

    async def window_full() -> None:
        while not set(range(g + 1)) <= requested():
            await asyncio.sleep(0.001)

    try:
        await asyncio.wait_for(window_full(), HANG)  # T(P), T(P+d1), ..., T(P+d1..dg)
        for _ in range(20):
            await asyncio.sleep(0)
        assert requested() == set(range(g + 1))  # and nothing deeper while the root is unresolved
        assert {pos for call in draft.calls for pos, _ in call} == set(range(g))  # drafts up to depth g
    finally:
        root_target.set()
    result = await asyncio.wait_for(run, HANG)
    assert result.text == "".join(TRUTH)


async def test_draft_seeds_follow_the_tree_position_not_the_timing():
    sampled = SamplingParams(temperature=0.7, top_p=0.9, seed=11)
    runs = []
    for schedule, target_kw, draft_kw in (
            ("sync", {}, {}),
            ("async", {"delay": 0.01}, {}),
            ("async", {"delay_at": {0: 0.02, 3: 0.015}}, {"delay_at": {1: 0.005, 2: 0.012}})):
        target, draft = ScriptedEngine(TRUTH, **target_kw), ScriptedEngine(TRUTH, **draft_kw)
        p = LookaheadParams(mode="lr", schedule=schedule, depth=3, draft_sampling=sampled, target_sampling=sampled)
        result = await generate(target, PROMPT, p, draft, ExactVerifier())
        assert result.text == "".join(TRUTH)
        runs.append(dict(draft.prefixes))  # prefix texts -> the seed its draft was asked with
    common = set(runs[0]).intersection(*runs[1:])
    assert len(common) >= 3
    for prefix in common:
        assert len({r[prefix] for r in runs}) == 1, prefix
    assert runs[0][()] == derive_seed(11, 0, prefix_digest([]), 1)


async def test_closing_right_after_a_rejection_leaves_nothing_running():
    target = ScriptedEngine(TRUTH, delay=0.01)
    draft = ScriptedEngine(TRUTH, wrong_at={0: True})
    session = Lookahead(target, draft, ExactVerifier(), PROMPT, params(3))
    stream = session.stream()
    steps = await stream.__anext__()
    assert steps[0].source == "target" and steps[0].rejected_draft == "wrong 0.0\n\n"
    await stream.aclose()
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    calls = len(target.calls), len(draft.calls)
    await asyncio.sleep(0.05)  # anything left behind would start or finish its engine calls now
    assert (len(target.calls), len(draft.calls)) == calls
    assert target.in_flight == 0 and draft.in_flight == 0


async def test_a_failing_draft_pauses_speculation_then_resumes():
    target = ScriptedEngine(TRUTH, delay=0.005)
    draft = ScriptedEngine(TRUTH, fail_calls={0})  # the first draft call fails, the rest work
    result = await asyncio.wait_for(generate(target, PROMPT, params(3), draft, ExactVerifier()), HANG)
    assert result.text == "".join(TRUTH)
    assert len(result.stats.degraded) == 1 and result.stats.degraded[0].startswith("draft")
    assert result.stats.accepted_steps >= 1
