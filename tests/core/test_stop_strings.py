"""Stop strings over a stream of steps (orchestrator/stop_strings.py): pure, no engines."""
from __future__ import annotations

import asyncio
import random

import pytest

from orchestrator.stop_strings import StopStrings, normalize_stops
from orchestrator.types import GenerationResult, Stats, Step


def step(text: str, source: str = "target", reason: str = "delimiter") -> Step:
    return Step(text, list(range(len(text))), "k", reason, source)


def run(cycles: list[list[str]], stops) -> tuple[str, list, StopStrings]:
    """Feed cycles of step texts; return the streamed text, the pieces, and the filter."""
    f = StopStrings(stops)
    pieces = []
    for texts in cycles:
        pieces += f.feed([step(t) for t in texts])
        if f.stopped:
            break
    pieces += f.finish()
    return "".join(p.text for p in pieces), pieces, f


def reference(full: str, stops: list[str]) -> tuple[str, bool]:
    hits = [i for i in (full.find(s) for s in stops) if i >= 0]
    return (full[:min(hits)], True) if hits else (full, False)


def test_no_stops_is_transparent():
    steps = [step("a\n\n"), step(""), step("b", reason="eos")]
    f = StopStrings(None)
    pieces = f.feed(steps) + f.finish()
    assert [(p.step, p.text, p.first, p.last) for p in pieces] == [(s, s.text, True, True) for s in steps]
    result = GenerationResult("a\n\nb", steps, Stats(), "stop")
    assert f.result(result) is result


def test_cut_inside_one_step():
    text, pieces, f = run([["The cows are here.\n\n", "More.\n\n"]], ["cows"])
    assert text == "The " and f.stopped
    assert pieces[-1].last


def test_cut_across_a_step_boundary():
    # "co" ends the first cycle, "ws" starts the next: the "co" is held back, never shown
    f = StopStrings(["cows"])
    first = f.feed([step("Look at the co")])
    assert "".join(p.text for p in first) == "Look at the "
    second = f.feed([step("ws now.\n\n")])
    assert second == [] and f.stopped
    third = f.feed([step("ignored")])
    assert third == [] and f.finish() == []


def test_held_text_is_released_when_no_match_follows():
    f = StopStrings(["cows"])
    assert "".join(p.text for p in f.feed([step("a co")])) == "a "
    rest = f.feed([step("ntinent\n\n")])
    assert "".join(p.text for p in rest) == "continent\n\n"
    assert [p.first for p in rest] == [False, True]  # the held "co" belongs to the first step
    assert f.finish() == [] and not f.stopped


def test_earliest_of_several_stops_wins_and_result_is_cut():
    text, pieces, f = run([["one two\n\n"], ["three four\n\n"]], ["four", "two"])
    assert text == "one "
    res = f.result(GenerationResult("one two\n\nthree four\n\n", [], Stats(), "length"))
    assert res.text == "one " and res.finish_reason == "stop"
    assert [s.text for s in res.steps] == ["one "]
    assert res.steps[0].token_ids == list(range(len("one two\n\n")))  # the tokens were generated


def test_stop_at_the_very_start():
    text, pieces, f = run([["STOP here"]], "STOP")
    assert text == "" and pieces == [] and f.stopped
    assert f.result(GenerationResult("STOP here", [], Stats(), "length")).text == ""


def test_unfinished_prefix_at_the_end_is_released():
    text, _, f = run([["abc"], ["def STO"]], ["STOP"])
    assert text == "abcdef STO" and not f.stopped
    res = f.result(GenerationResult("abcdef STO", [], Stats(), "length"))
    assert res.finish_reason == "length" and res.text == "abcdef STO"


@pytest.mark.parametrize("seed", range(200))
def test_random_splits_match_reference(seed):
    """Any split into steps and cycles streams exactly the reference cut, never more."""
    rng = random.Random(seed)
    alphabet = "ab\n "
    full = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
    stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
    cuts = sorted(rng.sample(range(len(full) + 1), min(len(full) + 1, rng.randint(0, 8))))
    texts = [full[a:b] for a, b in zip([0] + cuts, cuts + [len(full)])]
    cycles, i = [], 0
    while i < len(texts):
        k = rng.randint(1, 3)
        cycles.append(texts[i:i + k])
        i += k
    want, stopped = reference(full, stops)
    f = StopStrings(stops)
    shown = ""
    for texts_ in cycles:
        shown += "".join(p.text for p in f.feed([step(t) for t in texts_]))
        assert want.startswith(shown)  # nothing shown is ever taken back
        if f.stopped:
            break
    shown += "".join(p.text for p in f.finish())
    assert shown == want and f.stopped == stopped
    assert f.result(GenerationResult(full, [], Stats(), "length")).text == want


def test_normalize_stops():
    assert normalize_stops(None) == ()
    assert normalize_stops("x") == ("x",)
    assert normalize_stops(["a", "b", "a"]) == ("a", "b")
    with pytest.raises(ValueError):
        normalize_stops([""])


def test_breaking_out_of_the_stream_cancels_the_session():
    """The consumer pattern: a match ends iteration, and closing the stream cancels the session."""
    from orchestrator.lookahead import Lookahead, LookaheadParams
    from orchestrator.types import Prompt
    from tests.support.fakes import ScriptedEngine

    engine = ScriptedEngine(["Hello world.\n\n", "The cows come home.\n\n", "Never reached.\n\n"])
    session = Lookahead(engine, None, None, Prompt(text="x"), LookaheadParams(mode="ar", max_tokens=500))
    f = StopStrings(["cows"])

    async def consume() -> str:
        shown = ""
        stream = session.stream()
        try:
            async for steps in stream:
                shown += "".join(p.text for p in f.feed(steps))
                if f.stopped:
                    break
        finally:
            await stream.aclose()
        return shown

    assert asyncio.run(consume()) == "Hello world.\n\nThe "
    assert f.result(session.result()).finish_reason == "stop"
    assert len(session.steps) == 2  # the third step was never generated


def test_include_keeps_the_matched_stop_string():
    """vLLM's include_stop_str_in_output: the text ends after the match, not before it; of two
    stops matching at one place, the longer one."""
    f = StopStrings(["EN", "END"], include=True)
    pieces = f.feed([step("abc E")]) + f.feed([step("ND tail")])
    assert f.stopped and "".join(p.text for p in pieces) == "abc END"
    result = f.result(GenerationResult("abc END tail", [], Stats(), "length"))
    assert result.text == "abc END" and result.finish_reason == "stop"
