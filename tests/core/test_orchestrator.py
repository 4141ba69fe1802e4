"""Control flow of the Lookahead Reasoning core, pinned with a scripted engine."""
from __future__ import annotations

import pytest

from orchestrator.lookahead import Lookahead, LookaheadParams, derive_seed, generate
from orchestrator.types import Prompt, SamplingParams
from tests.support.fakes import ScriptedEngine
from verifier.exact import ExactVerifier, NormalizedVerifier

TRUTH = ["A\n\n", "B\n\n", "C\n\n", "D\n\n", "E\n\n", "F\n\n", "G."]
PROMPT = Prompt(text="q")


def engines(**draft_kw):
    return ScriptedEngine(TRUTH), ScriptedEngine(TRUTH, **draft_kw)


async def run(target, draft, schedule="sync", **kw):
    params = LookaheadParams(mode="lr", schedule=schedule, **kw)
    return await generate(target, PROMPT, params, draft, ExactVerifier())


async def first_cycle(target, draft, **kw):
    session = Lookahead(target, draft, ExactVerifier(), PROMPT, LookaheadParams(**kw))
    async for steps in session.stream():
        return steps, session


async def test_accepts_up_to_first_mismatch_then_target_step():
    target, draft = engines(wrong_at={2: True})
    steps, session = await first_cycle(target, draft, depth=4)
    assert [(s.text, s.source) for s in steps] == [("A\n\n", "draft"), ("B\n\n", "draft"), ("C\n\n", "target")]
    assert session.stats.accepted_by_depth == [1, 1, 0]
    assert session.stats.verified_by_depth == [1, 1, 1]
    # the target expanded P, P+d1, ..., P+d1..d4 in ONE batched call
    assert [len(c) for c in target.calls] == [5]


async def test_all_accepted_appends_bonus_target_step():
    target, draft = engines()
    steps, session = await first_cycle(target, draft, depth=3)
    assert [s.source for s in steps] == ["draft", "draft", "draft", "target"]
    assert "".join(s.text for s in steps) == "".join(TRUTH[:4])
    assert session.stats.accepted_steps == 3 and session.stats.target_steps == 1


async def test_width_picks_first_equivalent_sibling():
    target, draft = engines(wrong_at={0: {0}})  # sibling 0 wrong, sibling 1 right
    steps, session = await first_cycle(target, draft, depth=3, width=2)
    # sibling 1 accepted; deeper targets were conditioned on sibling 0, so the cycle ends there
    assert [(s.text, s.source) for s in steps] == [("A\n\n", "draft")]
    assert len(draft.calls[0]) == 2


async def test_sibling_drafts_get_distinct_seeds():
    target, draft = engines()
    sampled = SamplingParams(temperature=0.6, top_p=0.95, top_k=20, seed=7)
    await first_cycle(target, draft, depth=2, width=3, draft_sampling=sampled)
    siblings = [seed for seed in draft.seeds[:3]]
    assert len(set(siblings)) == 3 and None not in siblings
    assert derive_seed(7, 0, 0, 1) == derive_seed(7, 0, 0, 1) != derive_seed(7, 0, 0, 2)


async def test_eos_inside_accepted_step_ends_generation():
    target, draft = engines()
    result = await run(target, draft, depth=8)
    assert result.text == "".join(TRUTH)
    assert result.steps[-1].stop_reason == "eos" and result.steps[-1].source == "draft"
    assert result.finish_reason == "stop"
    # no bonus step after EOS
    assert result.stats.cycles == 1 and result.stats.target_steps == 0


async def test_delimiter_gate_no_children_of_a_cut_step():
    target = ScriptedEngine(TRUTH, cut_at={1})
    draft = ScriptedEngine(TRUTH, cut_at={1})
    steps, _ = await first_cycle(target, draft, depth=4)
    # d2 was cut at the step limit: nothing is drafted after it, and it is the last step
    assert max(pos for call in draft.calls for pos, _ in call) == 1
    assert [s.text for s in steps] == ["A\n\n", "B"]
    # the next cycle starts from a context that does not end a step: target only, no drafts
    session = Lookahead(target, draft, ExactVerifier(), PROMPT, LookaheadParams(depth=4))
    calls_before = len(draft.calls)
    stream = session.stream()
    await stream.__anext__()
    nxt = await stream.__anext__()
    assert len(draft.calls) == calls_before + 2  # the first cycle's two drafts only
    assert [s.source for s in nxt] == ["target"]


@pytest.mark.parametrize("schedule", ["sync", "async"])
@pytest.mark.parametrize("wrong", [{}, {1: True}, {0: True, 3: True, 5: True}])
async def test_lossless_with_exact_verifier(schedule, wrong):
    ar = await generate(ScriptedEngine(TRUTH), PROMPT, LookaheadParams(mode="ar"))
    assert ar.text == "".join(TRUTH) and all(s.source == "target" for s in ar.steps)
    target, draft = engines(wrong_at=dict(wrong))
    lr = await run(target, draft, schedule=schedule, depth=3)
    assert lr.text == ar.text
    assert [len(s.token_ids) for s in lr.steps] == [len(s.token_ids) for s in ar.steps]
    assert lr.stats.accepted_steps + lr.stats.target_steps == len(lr.steps)
    assert all(lr.steps[p].source == "target" for p in wrong)  # a wrong draft is never emitted


async def test_async_cancels_rejected_branches():
    # The root's target step (50 ms) returns long before the target steps issued under the wrong
    # first draft (500 ms each), so those are still in flight when the rejection cancels them.
    # (With 20 ms against 21 ms, a loaded machine let the subtree finish first: flaky.)
    target = ScriptedEngine(TRUTH, delay=0.5, delay_at={0: 0.05})
    draft = ScriptedEngine(TRUTH, wrong_at={0: True}, delay=0.001)
    result = await run(target, draft, schedule="async", depth=4)
    assert result.text == "".join(TRUTH)
    # the wrong first draft spawned a subtree whose in-flight target calls were cancelled
    assert result.stats.cancelled_branches > 0
    assert target.cancelled > 0


async def test_async_speculates_ahead_while_target_runs():
    # a target step 100x a drafted one: the draft chain is ahead even when the loop stalls
    target = ScriptedEngine(TRUTH, delay=0.1)
    draft = ScriptedEngine(TRUTH, delay=0.001)
    result = await run(target, draft, schedule="async", depth=3)
    assert result.text == "".join(TRUTH)
    assert result.stats.accepted_steps >= 4
    # target calls for deeper positions were issued before the root's verdicts came back
    assert max(pos for call in target.calls for pos, _ in call) >= 3


@pytest.mark.parametrize("schedule", ["sync", "async"])
async def test_failing_draft_degrades_to_target_only(schedule):
    target, draft = ScriptedEngine(TRUTH), ScriptedEngine(TRUTH, fail=True)
    result = await run(target, draft, schedule=schedule, depth=3)
    assert result.text == "".join(TRUTH)
    assert all(s.source == "target" for s in result.steps)
    assert result.stats.degraded and "draft" in result.stats.degraded[0]


async def test_ar_mode_never_calls_the_draft():
    target, draft = engines()
    result = await generate(target, PROMPT, LookaheadParams(mode="ar"), draft, ExactVerifier())
    assert result.text == "".join(TRUTH) and draft.calls == []
    assert result.stats.cycles == len(TRUTH)


def test_params_validate_ranges():
    with pytest.raises(ValueError, match="depth"):
        LookaheadParams(depth=99)
    with pytest.raises(ValueError, match="width"):
        LookaheadParams(width=0)
    with pytest.raises(ValueError, match="mode"):
        LookaheadParams(mode="fast")


# --- verdicts, stop reasons, seeds, transient failures ----------------------------------------

async def test_steps_carry_their_verdicts():
    target, draft = engines(wrong_at={1: True})
    steps, _ = await first_cycle(target, draft, depth=3)
    assert [(s.source, s.verifier, s.score) for s in steps] == [
        ("draft", "exact", 1.0), ("target", "exact", 0.0)]
    assert steps[1].rejected_draft == "wrong 1.0\n\n"
    result = await run(*engines(wrong_at={1: True}), depth=3)
    shown = result.to_dict(rejected_drafts=True)["steps"]
    assert shown[0] == {"text": "A\n\n", "source": "draft", "tokens": 3, "verifier": "exact", "score": 1.0}
    assert shown[1]["rejected_draft"] == "wrong 1.0\n\n" and shown[1]["score"] == 0.0
    # unverified draft text is left out of a response unless the caller asks for it
    assert [s.get("rejected_draft") for s in result.to_dict()["steps"]] == [None] * len(result.steps)


@pytest.mark.parametrize("schedule", ["sync", "async"])
async def test_a_draft_ending_the_answer_never_stands_in_for_a_continuing_step(schedule):
    # the draft ends the answer (EOS) with "C" where the target writes "C\n\n" and goes on:
    # equal after whitespace folding, but accepting it would cut the answer short
    draft = ScriptedEngine(["A\n\n", "B\n\n", "C"])
    target = ScriptedEngine(TRUTH)
    result = await generate(target, PROMPT, LookaheadParams(mode="lr", schedule=schedule, depth=3),
                            draft, NormalizedVerifier())
    assert result.text == "".join(TRUTH) and result.finish_reason == "stop"
    assert (result.steps[2].source, result.steps[2].verifier) == ("target", "stop-reason")
    assert result.steps[2].rejected_draft == "C"


async def test_unseeded_requests_sample_differently_and_seeded_ones_repeat():
    sampled = SamplingParams(temperature=0.8)

    async def draft_seeds(seed):
        target, draft = engines()
        await run(target, draft, depth=2, draft_sampling=sampled, target_sampling=sampled, seed=seed)
        return draft.seeds, target.seeds

    assert await draft_seeds(None) != await draft_seeds(None)  # fresh randomness per request
    assert await draft_seeds(0) == await draft_seeds(0)
    assert await draft_seeds(5) == await draft_seeds(5) != await draft_seeds(6)


def test_pipeline_params_keep_the_seed_unset_unless_given():
    from deployments.api.request import RequestOptions
    from deployments.config import LookaheadDefaults
    from deployments.pipeline import lookahead_params

    assert lookahead_params(LookaheadDefaults()).seed is None
    assert lookahead_params(LookaheadDefaults(), RequestOptions(seed=0)).seed == 0
    assert lookahead_params(LookaheadDefaults()).depth == "auto"
    assert lookahead_params(LookaheadDefaults(), RequestOptions(depth=3)).depth == 3


class FlakyVerifier:
    """The exact verifier, failing on the calls listed."""

    name = "exact"

    def __init__(self, fail_calls: set[int]) -> None:
        self.fail_calls, self.calls = fail_calls, 0

    async def verify(self, pairs):
        self.calls += 1
        if self.calls - 1 in self.fail_calls:
            raise RuntimeError("judge timed out")
        return await ExactVerifier().verify(pairs)


async def test_one_draft_failure_costs_one_cycle_not_the_request():
    target, draft = ScriptedEngine(TRUTH), ScriptedEngine(TRUTH, fail_calls={0})
    result = await run(target, draft, depth=2)
    assert result.text == "".join(TRUTH)
    assert result.steps[0].source == "target"  # the failing cycle ran target-only ...
    assert result.stats.accepted_steps >= 2  # ... and the next ones speculated again
    assert result.stats.degraded == ["draft: RuntimeError: engine down"]


async def test_one_verifier_failure_costs_one_cycle_not_the_request():
    target, draft = engines()
    verifier = FlakyVerifier({0})
    result = await generate(target, PROMPT, LookaheadParams(mode="lr", depth=2), draft, verifier)
    assert result.text == "".join(TRUTH)
    assert result.stats.accepted_steps >= 2 and verifier.calls >= 2
    assert result.stats.degraded == ["verifier: RuntimeError: judge timed out"]


async def test_a_dead_draft_is_retried_ever_less_often():
    truth = [f"s{i}\n\n" for i in range(19)] + ["end."]
    target, draft = ScriptedEngine(truth), ScriptedEngine(truth, fail=True)
    result = await generate(target, PROMPT, LookaheadParams(mode="lr", depth=2), draft, ExactVerifier())
    assert result.text == "".join(truth) and result.stats.cycles == 20
    # pauses of 1, 2, 4, 8 cycles after consecutive failures: tried at cycles 0, 1, 3, 7, 15
    assert [pos for call in draft.calls for pos, _ in call] == [0, 1, 3, 7, 15]
    assert len(result.stats.degraded) == 5


# --- lossless is token-exact ------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["sync", "async"])
async def test_same_text_in_other_tokens_is_rejected_by_exact(schedule):
    # the draft writes step 1 with the target's text in other token ids; a target row conditioned
    # on those ids goes off track (tests/support/fakes.py), as a real model's may
    ar = await generate(ScriptedEngine(TRUTH), PROMPT, LookaheadParams(mode="ar"))
    target, draft = engines(retokenize_at={1})
    lr = await run(target, draft, schedule=schedule, depth=3)
    assert lr.text == ar.text and [s.token_ids for s in lr.steps] == [s.token_ids for s in ar.steps]
    assert lr.steps[1].source == "target" and lr.steps[1].rejected_draft == TRUTH[1]
    assert lr.stats.accepted_by_depth[0] >= 1  # drafts around it were accepted
    # a verifier comparing text only would have let the off-track steps in: the hole this closes
    target, draft = engines(retokenize_at={1})
    holed = await generate(target, PROMPT, LookaheadParams(mode="lr", schedule=schedule, depth=3), draft,
                           NormalizedVerifier())
    assert holed.text != ar.text


async def test_exact_verifier_compares_token_ids_with_one_tokenizer_and_text_across():
    from orchestrator.types import Step, VerifyPair

    def pair(d_ids, t_ids, d_key="k", t_key="k", d_text="A.\n\n", t_text="A.\n\n"):
        return VerifyPair(PROMPT, [], Step(d_text, d_ids, d_key, "delimiter", "draft"),
                          Step(t_text, t_ids, t_key, "delimiter"))

    out = await ExactVerifier().verify([pair([1, 2], [1, 2]), pair([1, 3, 3], [1, 2]),
                                        pair([7, 8, 9], [1, 2], d_key="other"),
                                        pair([1, 2], [1, 2], d_key="other", d_text="A. \n\n")])
    assert [v.accepted for v in out] == [True, False, True, False]
    assert out[1].detail == "same text, other token ids"


# --- width > 1 under greedy decoding ------------------------------------------------------------

async def test_greedy_width_samples_the_other_siblings_with_distinct_seeds():
    from orchestrator.lookahead import SIBLING_SAMPLING

    target, draft = engines()
    seen = []
    original = draft.generate_steps

    async def record(requests):
        seen.append([r.sampling for r in requests])
        return await original(requests)

    draft.generate_steps = record
    steps, session = await first_cycle(target, draft, depth=2, width=3)
    first = seen[0]
    assert first[0].greedy and first[0].seed is None  # sibling 0 is the greedy step
    assert all(s.temperature == SIBLING_SAMPLING["temperature"] and s.top_p == SIBLING_SAMPLING["top_p"]
               for s in first[1:])
    assert len({s.seed for s in first[1:]}) == 2 and None not in {s.seed for s in first[1:]}
    # the scripted draft writes the same step for every sibling: copies are verified once
    assert session.stats.drafted_steps == 3 * len(seen)
    assert session.stats.verified_by_depth == [1, 1]
    assert [s.source for s in steps] == ["draft", "draft", "target"]


async def test_sync_extends_the_sibling_that_was_accepted():
    # sibling 0 is wrong at position 0, sibling 1 right: the cycle ends on sibling 1 (the deeper
    # rows were conditioned on sibling 0) and the next cycle drafts and expands after sibling 1
    target, draft = engines(wrong_at={0: {0}})
    session = Lookahead(target, draft, ExactVerifier(), PROMPT, LookaheadParams(depth=2, width=2))
    stream = session.stream()
    first = await stream.__anext__()
    assert [(s.text, s.source) for s in first] == [("A\n\n", "draft")]
    calls = len(draft.prefixes)
    second = await stream.__anext__()
    await stream.aclose()
    assert all(prefix[:1] == ("A\n\n",) for prefix, _ in draft.prefixes[calls:])
    assert [s.source for s in second][:1] == ["draft"] and second[0].text == "B\n\n"
