"""The adaptive speculation depth (`depth: "auto"`): the cost model's formulas, the policy's
choices from injected timings, and the policy driving sessions over scripted engines on a
simulated clock (benchmarks/bench/virtual_time.py): every duration is the one the test gave, whatever
the machine is doing, so no choice here depends on wall-clock timing."""
from __future__ import annotations

import asyncio
import math

import pytest

from benchmarks.bench.policy_replay import COSTS, bernoulli, first_speculation, run_request, script
from benchmarks.bench.virtual_time import run_virtual
from orchestrator.cost_model import (
    async_speedup,
    cycle_speedup,
    steps_per_cycle,
    steps_per_cycle_by_depth,
    steps_per_run,
    window_load,
)
from orchestrator.lookahead import Lookahead, LookaheadParams, _Load, generate
from orchestrator.policy import PriorBook, SpeculationPolicy
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


def plain_cycle(st: Stats, seconds: float = 1.0, tokens: int = 20) -> None:
    """One g = 0 cycle: a target step of `tokens` tokens in `seconds`."""
    st.count_target_call(1, seconds, tokens)
    st.wall_s += seconds
    st.tokens += tokens
    st.cycles += 1


def probe_cycle(st: Stats, accepted: bool, target_s: float = 1.0, draft_s: float = 0.1, tokens: int = 20) -> None:
    """One probe cycle: the target step, a draft beside it, the draft's verdict judged aside."""
    plain_cycle(st, target_s, tokens)
    st.draft_calls += 1
    st.draft_s += draft_s
    st.count_verified(0, accepted, used=False)


def decide_cycles(policy: SpeculationPolicy, st: Stats, accepted, cycles: int, **probe) -> list:
    """Drive the policy for `cycles` g = 0 cycles (probes ruled by `accepted(i)`); the decisions."""
    out = []
    for i in range(cycles):
        d = policy.decide(st)
        out.append(d)
        if d.depth:
            break
        if d.probe:
            probe_cycle(st, accepted(i), **probe)
        else:
            plain_cycle(st)
    return out


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


def test_the_async_window_formula():
    r = [1.0 + 0.05 * n for n in range(8)]  # a nearly free batch
    assert async_speedup([0.9], 0, 0.2, r) == 1.0
    assert steps_per_run([0.5], horizon=64) == pytest.approx(2.0)
    assert steps_per_run([1.0], horizon=10) == 10  # an answer is finite
    # nothing accepted: each step costs the target step under the window's load and a verdict
    n, r_n, tau = window_load(2, 0.2, r, 0.01)
    assert async_speedup([0.0], 2, 0.2, r, 0.01) == pytest.approx(1 / (r_n + 0.01))
    # deep windows at high acceptance: accepted steps come every draft step (c), not every target step
    n, r_n, tau = window_load(6, 0.25, r)
    assert tau == pytest.approx(0.25) and 1 < n < 7 and n == pytest.approx(r_n / tau, rel=0.01)
    speedups = [async_speedup([0.9], g, 0.25, r) for g in range(7)]
    assert all(b >= a - 1e-4 for a, b in zip(speedups, speedups[1:])) and speedups[6] > 2.5
    assert speedups[6] > cycle_speedup([0.9], 6, 0.25, r[6])  # drafting overlapped beats drafting first


# --- choices from injected timings ----------------------------------------------------------

def test_high_acceptance_and_a_free_batch_speculate_deep():
    d = SpeculationPolicy(max_depth=6).decide(measured([0.8] * 6, slope=0.02, draft=0.05))
    assert d.depth >= 4 and not d.probe
    assert d.reason.startswith(f"g={d.depth}: ")


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
    assert est.b_mean[0] > 0.85 and est.b_mean[1] < 0.15
    assert len(est.b_mean) == 6  # depths never reached borrow the pooled acceptance
    assert 0.4 < est.b_mean[4] < 0.6


def test_batch_cost_is_fitted_from_measured_batches():
    est = SpeculationPolicy(max_depth=6).estimate(measured([0.5], slope=0.3, rows=3, draft=0.2, verify=0.1))
    assert est.r[0] == 1.0
    assert est.r[1] == pytest.approx(1.3, abs=0.05) and est.r[2] == pytest.approx(1.6, abs=0.05)
    assert est.r[6] == pytest.approx(1 + 0.3 * 6, abs=0.2)  # extrapolated along the fitted slope
    assert est.c == pytest.approx(0.2) and est.v == pytest.approx(0.1)
    assert est.sources == {"r": "run", "c": "run", "v": "run"}


def test_batch_cost_compares_seconds_per_token():
    # single rows happened to be short steps (10 tokens, 1 s), the batches of 2 long ones (30 tokens,
    # 3.6 s): per call a batch looks 3.6x one row, per token of a row it costs 1.2x
    st = Stats()
    for _ in range(10):
        st.count_target_call(1, 1.0, 10)
        st.count_target_call(2, 3.6, 30)
    st.draft_calls, st.draft_s = 10, 1.0
    assert SpeculationPolicy(max_depth=2).estimate(st).r[1] == pytest.approx(1.2, abs=0.05)


def test_the_async_schedule_is_costed_with_drafting_overlapped():
    st = measured([0.8] * 6, slope=0.1, draft=0.35)
    sync = SpeculationPolicy(max_depth=6, schedule="sync").estimate(st)
    asyn = SpeculationPolicy(max_depth=6, schedule="async").estimate(st)
    assert max(asyn.expected) > max(sync.expected)
    assert asyn.expected.index(max(asyn.expected)) >= sync.expected.index(max(sync.expected))


@pytest.mark.parametrize("beside", [1.0, 1.2], ids=["own-devices", "one-memory-bus"])
def test_the_async_window_times_drafting_beside_the_target_before_it_drafts(beside):
    # b = 0.55, a draft step 0.6 of a target step, r(2) = 1.3: the async window, its drafts free
    # beside the target, would pay (1.07x at g = 2). First a probe's target step and a plain one
    # are timed. Where the probe's draft slowed the target step beside it (one memory bus under
    # cores of their own: measured 7-20% on this CPU), the window is costed as sync cycles and
    # the policy stays at g = 0; where it did not, it drafts on the third cycle. Without the two
    # timings it drafted at once in both cases (and ran 0.80x of sd in the split-core bench).
    policy = SpeculationPolicy(max_depth=6, schedule="async")
    st = measured([0.55] * 6, verdicts=20, slope=0.3, draft=0.6)
    decisions = decide_cycles(policy, st, lambda i: i % 2 == 0, 30, target_s=beside, draft_s=0.6)
    assert [(d.depth, d.probe) for d in decisions[:2]] == [(0, True), (0, False)]
    assert "not timed" in decisions[0].reason and "not timed" in decisions[1].reason
    if beside == 1.0:
        assert decisions[2].depth > 0 and len(decisions) == 3
    else:
        assert len(decisions) == 30 and all(d.depth == 0 for d in decisions)
        assert st.policy["sources"]["schedule"] == "shared cores: async costed as sync"


def test_first_cycle_without_timings_is_a_probe():
    st = Stats()
    d = SpeculationPolicy().decide(st)
    assert d.depth == 0 and d.probe and "no timings" in d.reason
    assert st.policy_log == ["cycle 0: probe: no timings yet"]


def test_free_probes_run_every_cycle():
    # the draft has its own device: a probe cycle takes as long per token as a plain one
    policy, st = SpeculationPolicy(max_depth=6), Stats()
    plain_cycle(st)
    decisions = decide_cycles(policy, st, lambda i: False, 30, target_s=1.0, draft_s=0.3)
    assert all(d.depth == 0 for d in decisions)
    assert sum(d.probe for d in decisions[-20:]) >= 19
    assert st.policy["probe_cost"] < 0.03


def test_probes_that_cost_a_draft_step_are_spaced_by_their_cost():
    # shared cores: the probe's draft slows the target step beside it by its own 0.35 step
    policy, st = SpeculationPolicy(max_depth=6), Stats()
    plain_cycle(st)
    decisions = decide_cycles(policy, st, lambda i: False, 60, target_s=1.35, draft_s=0.7)
    probes = [i for i, d in enumerate(decisions) if d.probe]
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert st.policy["probe_cost"] == pytest.approx(0.35, abs=0.02)
    assert gaps[-1] == 12 == policy.probe_every(policy.estimate(st))  # 0.35 / 3% of the time
    # what a sync cycle would pay for a draft step alone: the probe's 0.7 s less the 0.35 s it cost the target
    assert policy.estimate(st).c == pytest.approx(0.35, abs=0.03)


@pytest.mark.parametrize("shared_device", [True, False])
def test_under_load_a_probe_on_the_targets_device_is_costed_for_every_answer_there(shared_device):
    # shared cores, a probe costing 0.35 of a step as above (one in 12 cycles for one answer), with
    # 2 answers in flight: on the target's device its draft holds back both, so the answer probes
    # half as often (the replica as often as one answer alone would); where the draft has its own
    # device the load changes nothing
    policy, st = SpeculationPolicy(max_depth=6, shared_device=shared_device), Stats()
    policy.load = 2
    plain_cycle(st)
    decisions = decide_cycles(policy, st, lambda i: False, 240, target_s=1.35, draft_s=0.7)
    probes = [i for i, d in enumerate(decisions) if d.probe]
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    if shared_device:
        assert st.policy["probe_cost"] == pytest.approx(2 * 0.35, abs=0.05)
        assert gaps[-1] == policy.probe_every(policy.estimate(st)) == math.ceil(2 * 0.35 / 0.03)  # was 12
        assert st.policy["sources"]["load"] == "draft costed for 2 answers on the device"
    else:
        assert gaps[-1] == 12 and "load" not in st.policy["sources"]


def test_under_load_a_shared_device_drafts_only_where_it_pays_every_answer():
    # acceptance 0.9 and a draft step at 0.2 of a target step: one answer alone drafts deep; with
    # 8 answers on the device each drafted second is paid 8 times, and no depth pays that
    good = measured([0.9] * 6, slope=0.1, draft=0.2).to_dict()
    alone = SpeculationPolicy(max_depth=6, prior=good, shared_device=True).decide(Stats())
    loaded = SpeculationPolicy(max_depth=6, prior=good, shared_device=True)
    loaded.load = 8
    assert alone.depth >= 3 and loaded.decide(Stats()).depth == 0


def test_no_probe_where_not_even_a_drafter_that_is_always_right_would_pay():
    # under 8 answers on a shared device a draft step of 0.2 costs 1.6 steps: no depth pays even at
    # acceptance 1, so probing could not change the choice; one answer alone keeps probing
    for load, probes in ((8, 0), (1, 5)):
        policy, st = SpeculationPolicy(max_depth=6, shared_device=True, prior=measured([0.1], draft=0.2).to_dict()), Stats()
        policy.load = load
        plain_cycle(st)
        decisions = decide_cycles(policy, st, lambda i: False, 60, target_s=1.0, draft_s=0.2)
        assert all(d.depth == 0 for d in decisions)
        n = sum(d.probe for d in decisions)
        assert n >= probes if load == 1 else n == 0, n
        if load > 1:
            assert "no depth pays even with every draft accepted" in st.policy["reason"]


def test_a_session_tells_its_policy_the_answers_in_flight():
    # the server's count of sessions, read before each decision
    in_flight = [3]
    params = LookaheadParams(mode="lr", depth="auto", max_tokens=400, max_step_tokens=64)
    session = Lookahead(ScriptedEngine(TRUTH), ScriptedEngine(TRUTH), ExactVerifier(), PROMPT, params,
                        shared_device=True, load=lambda: in_flight[0])

    async def run():
        seen = []
        async for _ in session.stream():
            seen.append(session.policy.load)
            in_flight[0] += 1
        return seen

    seen = asyncio.run(run())
    assert seen[:3] == [3, 4, 5] and session.stats.policy["sources"]["load"].startswith("draft costed for")


def test_short_requests_space_their_probes_by_the_costs_their_prior_measured():
    # shared cores as above (a probe costs 0.35 of a step: one in 12 cycles), then requests of 4
    # cycles each. Without the prior's cycle costs each request timed probes and plain cycles
    # itself, probing every other cycle (2 probes per request, half of all cycles); with them the
    # requests probe about once in 12 cycles between them, and still probe.
    book, key = PriorBook(), PriorBook.key("t", "d", "exact", True)
    first = Stats()
    plain_cycle(first)
    decide_cycles(SpeculationPolicy(max_depth=6), first, lambda i: False, 60, target_s=1.35, draft_s=0.7)
    book.add(key, first)
    assert book.get(key)["cycle_costs"]["probe"]["cycles"] >= 4
    probes = 0
    for _ in range(12):
        policy, st = SpeculationPolicy(max_depth=6, prior=book.get(key)), Stats()
        decisions = decide_cycles(policy, st, lambda i: False, 4, target_s=1.35, draft_s=0.7)
        assert [d.depth for d in decisions] == [0] * 4
        probes += sum(d.probe for d in decisions)
        book.add(key, st)
    assert 2 <= probes <= 6, probes  # 48 cycles: 4 at one in 12


def test_a_drafter_that_turns_good_is_followed_within_a_few_cycles():
    # rejected probes for 40 cycles, then every probe accepted: the short memory takes over
    policy = SpeculationPolicy(max_depth=6)
    st = measured([0.0], verdicts=5, slope=0.04, draft=0.2)
    plain_cycle(st)
    decisions = decide_cycles(policy, st, lambda i: i >= 40, 80, target_s=1.0, draft_s=0.2)
    assert all(d.depth == 0 for d in decisions[:40])
    assert decisions[-1].depth > 0 and len(decisions) <= 40 + 6


def test_prior_from_history_then_the_session_takes_over():
    good = measured([0.9] * 6, slope=0.1, draft=0.2).to_dict()
    policy = SpeculationPolicy(max_depth=6, prior=good)
    st = Stats()
    first = policy.decide(st)  # nothing measured in this request yet
    assert first.depth >= 3 and not first.probe
    # this request's drafts are all rejected, cycle after cycle: its own verdicts take over
    depths = []
    for _ in range(30):
        d = policy.decide(st)
        depths.append(d.depth)
        if d.depth or d.probe:
            st.count_verified(0, False, used=not d.probe)
        plain_cycle(st)
    assert depths[-10:] == [0] * 10


def test_priors_are_kept_per_pair_verifier_and_sampling():
    book = PriorBook()
    exact = PriorBook.key("qwen2.5-1.5b", "qwen2.5-0.5b", "exact", greedy=True)
    embed = PriorBook.key("qwen2.5-1.5b", "qwen2.5-0.5b", "embedding", greedy=True)
    sampled = PriorBook.key("qwen2.5-1.5b", "qwen2.5-0.5b", "exact", greedy=False)
    book.add(exact, measured([0.1], verdicts=10))
    book.add(embed, measured([0.9], verdicts=10))
    assert book.get(sampled) is None
    assert book.get(exact)["accepted_by_depth"] == [1] and book.get(embed)["accepted_by_depth"] == [9]


def test_stats_accumulate_into_a_prior():
    total = Stats()
    for _ in range(3):
        total.accumulate(measured([0.5, 0.5], verdicts=10, slope=0.1))
    assert total.verified_by_depth == [30, 30] and total.accepted_by_depth == [15, 15]
    assert total.target_calls_by_rows == [30] * 6 and total.draft_calls == 60
    assert not SpeculationPolicy().estimate(Stats()).timed
    assert SpeculationPolicy(prior=total.to_dict()).estimate(Stats()).timed


def test_a_sub_microsecond_verify_time_survives_the_stats_dict():
    # the metrics read phase seconds from this dict: an exact verifier's few token comparisons
    # can take well under a microsecond per request, and must not export as 0
    st = Stats(verify_s=3e-7, draft_s=1.25)
    d = st.to_dict()
    assert d["verify_s"] == pytest.approx(3e-7) and d["draft_s"] == 1.25


# --- bookkeeping the policy relies on --------------------------------------------------------

def test_overlapping_calls_count_once_in_busy_time():
    async def main():
        lr = Lookahead(ScriptedEngine(TRUTH), None, None, PROMPT, LookaheadParams(mode="ar"))
        await asyncio.gather(lr._timed("draft_s", asyncio.sleep(1.0)),
                             lr._timed("draft_s", asyncio.sleep(1.5)))
        return lr.stats.draft_s

    assert run_virtual(main()) == pytest.approx(1.5)


def test_target_rows_in_flight_are_time_weighted():
    load = _Load()
    a = load.start(1, 0.0)
    b = load.start(1, 0.5)  # joins halfway through a
    assert load.end(a, 1, 1.0) == pytest.approx(1.5)
    assert load.end(b, 1, 2.0) == pytest.approx(4 / 3)


# --- the policy driving sessions (scripted engines, simulated clock) -------------------------

@pytest.mark.parametrize("schedule", ["sync", "async"])
def test_auto_speculates_when_drafts_are_right_and_cheap(schedule):
    target, draft = ScriptedEngine(TRUTH, delay=0.02), ScriptedEngine(TRUTH, delay=0.001)
    params = LookaheadParams(mode="lr", schedule=schedule)  # depth "auto" is the default
    result = run_virtual(generate(target, PROMPT, params, draft, ExactVerifier()))
    assert result.text == "".join(TRUTH)
    st = result.stats
    assert st.probes >= 1 and st.policy_log[0] == "cycle 0: probe: no timings yet"
    assert sum(st.depth_counts[1:]) >= 1 and st.accepted_steps >= 3
    assert st.policy["b_by_depth"][0] > 0.5


def test_auto_stays_at_target_decoding_when_drafts_are_wrong():
    # every draft is wrong and a second target row costs as much as the first
    target = ScriptedEngine(TRUTH, delay=0.01, row_delay=0.01)
    draft = ScriptedEngine(TRUTH, delay=0.005, wrong_at={i: True for i in range(len(TRUTH))})
    result = run_virtual(generate(target, PROMPT, LookaheadParams(mode="lr"), draft, ExactVerifier()))
    assert result.text == "".join(TRUTH)
    st = result.stats
    assert st.accepted_steps == 0 and st.verified_steps == st.aside_verdicts  # no step waited for a verdict
    assert st.probes >= 3 and sum(st.depth_counts[1:]) == 0  # only probes drafted
    assert sum(len(c) for c in draft.calls) == st.probes  # one drafted step per probe
    assert st.aside_verdicts >= st.probes - 1 and st.verified_by_depth[0] == st.aside_verdicts
    assert all(len(c) == 1 for c in target.calls)  # no batch was ever paid for
    assert st.policy["depth"] == 0 and st.policy_log[1].startswith("cycle 1: ")


def test_explicit_depth_is_used_on_every_cycle():
    target, draft = ScriptedEngine(TRUTH), ScriptedEngine(TRUTH, wrong_at={0: True, 5: True})
    result = run_virtual(generate(target, PROMPT, LookaheadParams(mode="lr", depth=2), draft, ExactVerifier()))
    assert result.text == "".join(TRUTH)
    assert result.stats.probes == 0 and result.stats.policy == {}
    assert result.stats.depth_counts == [0, 0, result.stats.cycles]
    assert len(target.calls) == result.stats.cycles and len(target.calls[0]) == 3


def test_a_probe_drafts_while_the_target_writes_its_step():
    # The first cycle (no timings yet) is a probe. Its draft waits until the target's call has
    # started: were the probe run draft-then-target, as a drafting cycle must be, it would hang.
    target_started = asyncio.Event()

    class Target(ScriptedEngine):
        async def generate_steps(self, requests):
            target_started.set()
            return await super().generate_steps(requests)

    async def main():
        target = Target(TRUTH, delay=0.01)
        draft = ScriptedEngine(TRUTH, gates={0: target_started})
        return target, draft, await asyncio.wait_for(
            generate(target, PROMPT, LookaheadParams(mode="lr"), draft, ExactVerifier()), 10)

    target, draft, result = run_virtual(main())
    assert result.text == "".join(TRUTH)
    assert result.stats.probes >= 1 and result.stats.verified_by_depth[0] >= 1
    assert draft.calls[0] == [(0, draft.calls[0][0][1])] and target.calls[0][0][0] == 0
    assert len(target.calls[0]) == 1  # a probe adds no target row


@pytest.mark.parametrize("schedule", ["sync", "async"])
def test_the_answer_never_waits_for_a_probes_draft(schedule):
    # drafts take 5x a target step and are all wrong: auto probes, and every probe's draft is
    # judged aside, so the answer takes exactly as long as plain target decoding
    def run(mode):
        target = ScriptedEngine(TRUTH, delay=1.0)
        draft = ScriptedEngine(TRUTH, delay=5.0, wrong_at={i: True for i in range(len(TRUTH))})
        params = LookaheadParams(mode=mode, schedule=schedule)
        return run_virtual(generate(target, PROMPT, params, draft if mode == "lr" else None, ExactVerifier()))

    lr, ar = run("lr"), run("ar")
    assert lr.text == ar.text and lr.stats.probes >= 1 and lr.stats.accepted_steps == 0
    assert lr.stats.wall_s == pytest.approx(ar.stats.wall_s)


def test_an_async_draft_that_outlives_its_target_step_is_still_judged():
    # depth 1, async: the draft at position 3 takes far longer than its target step; the answer
    # moves on with the target's step, and that draft's verdict still reaches the depth counts
    target = ScriptedEngine(TRUTH, delay=0.01)
    draft = ScriptedEngine(TRUTH, delay=0.001, delay_at={3: 0.02})
    params = LookaheadParams(mode="lr", depth=1, schedule="async")
    result = run_virtual(generate(target, PROMPT, params, draft, ExactVerifier()))
    st = result.stats
    assert result.text == "".join(TRUTH)
    assert st.aside_verdicts == 1 and sum(st.verified_by_depth) == st.verified_steps
    assert st.accepted_steps == sum(s.source == "draft" for s in result.steps) + 1  # accepted, not waited for
    assert result.steps[3].source == "target"


@pytest.mark.parametrize("costs", ["cpu", "h100"])
@pytest.mark.parametrize("schedule", ["sync", "async"])
def test_speculation_resumes_within_ten_cycles_of_acceptance_turning_high(costs, schedule):
    # benchmarks/bench/policy_replay.py's recovery case on its measured costs, draft and target on their
    # own devices: acceptance 0.1 for 40 steps, then 0.9
    for seed in range(3):
        trace: list = []
        verdicts = bernoulli(0.1, 40, seed) + bernoulli(0.9, 60, seed + 500)
        run_virtual(run_request(COSTS[costs], "split", schedule, "auto", script(verdicts, seed), seed, trace=trace))
        if schedule == "sync":  # low acceptance, once measured: no batch bought
            assert all(t["depth"] == 0 for t in trace if 5 <= t["position"] < 40)
        cycles = first_speculation(trace, 40)
        assert cycles is not None and cycles <= 10
