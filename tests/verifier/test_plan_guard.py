"""The plan guard (verifier/plan.py) on its own and in front of a verifier."""
from __future__ import annotations

from orchestrator.types import Prompt, Step, VerifyPair
from verifier.exact import ExactVerifier
from verifier.factory import build_verifier
from verifier.numeric import GuardedVerifier
from verifier.plan import PlanGuard, plan_items

GYM = ("Mike pays $12 a day for the gym, $40 a month for a locker and $5 per week for towels. "
       "How much does he pay for 4 weeks of 7 days?")
PLAN = ("To find the total cost, we need:\n1. the cost per day for 28 days\n2. the locker per month\n"
        "3. the towels per week\n\n")
DROPPED = "To find the total cost, we need:\n1. the cost per day for 28 days\n2. the locker per month\n\n"
MERGED = "To find the total cost, we need:\n1. the cost per day for 28 days\n2. the locker and the towels\n\n"
PROSE = "We need the daily cost, the locker's monthly cost and the towels' weekly cost, then add them up.\n\n"
PROSE_DROPPED = "We need the daily cost and the locker's monthly cost, then add them up.\n\n"


def test_items_are_counted_by_list_markers():
    assert plan_items(PLAN) == 3 and plan_items(DROPPED) == 2
    assert plan_items("Step 1: add.\nStep 2: divide.\n") == 2
    assert plan_items("- apples\n* pears\n• plums\n2) figs") == 4
    # a number that opens a line without a marker, or a decimal, is not an item
    assert plan_items("48 clips in April.\n3.5 hours later") == 0


def test_dropped_added_and_merged_items_are_rejected():
    g = PlanGuard()
    for draft, target in ((DROPPED, PLAN), (PLAN, DROPPED), (MERGED, PLAN)):
        ok, why = g.check(draft, target, GYM)
        assert not ok and "list items" in why
    assert g.check(PLAN, PLAN.replace("we need", "we must compute"), GYM)[0]


def test_a_prose_plan_missing_one_of_the_question_words_is_rejected():
    ok, why = PlanGuard().check(PROSE_DROPPED, PROSE, GYM)
    assert not ok and "week" in why and "towel" in why
    # the same plan reworded keeps the question's words ("weekly" is "per week"): it passes
    assert PlanGuard().check("First the cost per day, the locker per month and the towels per week; then the "
                             "sum.\n\n", PROSE, GYM) == (True, "plan consistent")


def test_steps_that_compute_are_left_to_the_numeric_guard():
    # "towels" only on one side, but both steps compute a result: not the plan guard's business
    ok, _ = PlanGuard().check("The towels cost 5 * 4 = 20 dollars.\n\n", "For 4 weeks that is 5 * 4 = 20 dollars.\n\n",
                              GYM)
    assert ok


def _pair(draft: str, target: str) -> VerifyPair:
    prompt = Prompt(messages=[{"role": "user", "content": GYM}])
    return VerifyPair(prompt, [], Step(draft, [], "k", "delimiter", "draft"), Step(target, [], "k", "delimiter"))


class AcceptAll:
    name = "lenient"

    async def verify(self, pairs):
        from orchestrator.types import Verdict

        return [Verdict(True, 0.97, self.name) for _ in pairs]


async def test_guarded_verifier_runs_the_plan_guard_before_the_inner_verifier():
    v = GuardedVerifier(AcceptAll(), numeric=True, plan=True)
    assert v.name == "lenient+numeric+plan"
    out = await v.verify([_pair(DROPPED, PLAN), _pair(PLAN, PLAN.replace("\n\n", " \n\n")), _pair(PROSE, PROSE)])
    assert not out[0].accepted and out[0].detail.startswith("plan:") and out[0].score == 0.0
    assert out[1].accepted and out[1].verifier == "equal"  # the pre-check still comes first
    assert out[2].accepted
    plan_only = GuardedVerifier(AcceptAll(), numeric=False, plan=True)
    assert plan_only.name == "lenient+plan" and plan_only.guard is None


def test_factory_puts_the_plan_guard_in_front_of_semantic_kinds_only():
    class Scorer:
        async def choice_probs(self, prompts, choices):
            return [[1.0 / len(choices)] * len(choices) for _ in prompts]

    assert build_verifier("llm-judge", judge=Scorer(), numeric_guard=False).name == "llm-judge+plan"
    assert build_verifier("target-score", target=Scorer(), numeric_guard=False).name == "target-score+plan"
    assert build_verifier("llm-judge", judge=Scorer(), numeric_guard=False, plan_guard=False).name == "llm-judge"
    # the factory's defaults are the configuration's: both guards (verifier/kinds.py)
    assert build_verifier("llm-judge", judge=Scorer()).name == "llm-judge+numeric+plan"
    assert isinstance(build_verifier("exact", plan_guard=True), ExactVerifier)


def test_configured_verifiers_have_both_guards():
    from deployments.config import VerifierConfig
    from deployments.pipeline import build_verifier as from_config

    class Scorer:
        async def choice_probs(self, prompts, choices):
            return [[1.0 / len(choices)] * len(choices) for _ in prompts]

    assert VerifierConfig().plan_guard is True and VerifierConfig().numeric_guard is True
    assert from_config(VerifierConfig(kind="llm-judge"), judge=Scorer()).name == "llm-judge+numeric+plan"
    assert from_config(VerifierConfig(kind="target-score"), target=Scorer()).name == "target-score+numeric+plan"
    assert from_config(VerifierConfig(kind="llm-judge", plan_guard=False, numeric_guard=False),
                       judge=Scorer()).name == "llm-judge"


def test_a_plan_that_drops_its_operation_is_rejected():
    tanks = "Three tanks hold 7000, 5000 and 3000 gallons, filled 3/4, 4/5 and 1/2. How many gallons in total?"
    full = "To solve this problem, we need to calculate the amount of water in each tank and then sum these amounts.\n\n"
    ok, why = PlanGuard().check("To solve this problem, we need to calculate the amount of water in each tank.\n\n",
                                full, tanks)
    assert not ok and "add" in why
    # "add them up" names the same operation as "sum these amounts"
    assert PlanGuard().check("We need the water in each tank, and then we add them up.\n\n", full, tanks)[0]


def test_a_generic_opening_commits_to_nothing_and_passes():
    g = PlanGuard()
    assert g.check("Let's solve this problem step by step.\n\n", PROSE, GYM) == (True, "generic opening")
    # an opening that names the problem is held to the target's plan
    assert not g.check("To find what Mike pays, let's go step by step.\n\n", PROSE, GYM)[0]


NATALIA = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
           "How many clips did Natalia sell altogether in April and May?")
# the target's plan and the draft's, as `lookahead demo` wrote them (Qwen2.5-0.5B target, SmolLM2-135M
# draft): the same count, the same words of the question, cosine 0.97, but April and May became one item
NATALIA_PLAN = ("1. Calculate the number of clips sold in April.\n2. Calculate the number of clips sold in May.\n"
                "3. Add the number of clips sold in April and May to get the total.\n\n")
NATALIA_MERGED = ("1. Calculate the number of clips sold in April and May.\n2. Calculate the total number of clips "
                  "sold in April and May.\n3. Add the number of clips sold in April and May to find the total number "
                  "of clips sold in April and May.\n\n")


def test_items_rewritten_under_the_same_count_are_rejected_item_by_item():
    ok, why = PlanGuard().check(NATALIA_MERGED, NATALIA_PLAN, NATALIA)
    assert not ok and why.startswith("plan: the items name"), why
    # the same items in another order are the same plan
    reordered = ("1. Calculate the number of clips sold in May.\n2. Calculate the number of clips sold in April.\n"
                 "3. Add the number of clips sold in April and May to get the total.\n\n")
    assert PlanGuard().check(reordered, NATALIA_PLAN, NATALIA) == (True, "plan consistent")


def test_a_name_said_as_a_pronoun_in_one_item_is_the_same_item():
    question = "James trains twice a day for 4 hours, 5 days a week. How many hours does he train a year?"
    target = ("1. Calculate the hours James trains in a day.\n2. Calculate the hours James trains in a week.\n"
              "3. Calculate the hours James trains in a year.\n\n")
    draft = ("1. Find how many hours James trains each day.\n2. Find how many hours he trains each week.\n"
             "3. Find how many hours he trains each year.\n\n")
    assert PlanGuard().check(draft, target, question) == (True, "plan consistent")
    # but a day's item turned into a week's is another plan
    assert not PlanGuard().check(draft.replace("each day", "each week"), target, question)[0]
