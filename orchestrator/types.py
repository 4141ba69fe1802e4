"""Plain data types that cross every boundary (engines, verifiers, Ray, gRPC).

They are dataclasses of builtins so they pickle cheaply and convert to JSON/protobuf
without custom code, in the spirit of vLLM's SamplingParams / RequestOutput.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

DELIMITER = "\n\n"

StopReason = Literal["delimiter", "eos", "step_limit", "budget"]
Source = Literal["draft", "target"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling for one step generation. temperature == 0 means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    # OpenAI/vLLM extras, applied before the greedy choice as vLLM does (min_p only when sampling).
    # repetition_penalty covers the prompt and every step so far: an engine's context is both.
    repetition_penalty: float = 1.0
    min_p: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) in this engine's vocabulary
    # vLLM's stop controls. min_tokens counts over the whole answer, not one step: the engine holds
    # off EOS and stop_token_ids until the answer (its context past the prompt) has that many
    # tokens; step delimiters still end steps. ignore_eos: EOS is an ordinary token. A stop token
    # ends the answer like EOS and, unless include_stop_str_in_output, is left out of it.
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True  # how the step's text is decoded from its ids

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def shapes_logits(self) -> bool:
        """True when the raw logits' argmax is not the greedy choice (bias or penalty applied)."""
        return bool(self.logit_bias) or self.repetition_penalty != 1.0

    @property
    def own_stops(self) -> bool:
        """True when the answer ends on other tokens than the engine's EOS ids."""
        return self.ignore_eos or bool(self.stop_token_ids)

    def with_seed(self, seed: int | None) -> "SamplingParams":
        return replace(self, seed=seed)


@dataclass
class Prompt:
    """What the user asked: chat messages or a raw completion prompt.

    Each engine renders it with its own tokenizer (chat template when it has one), which
    is what lets draft and target use different tokenizers.
    """

    messages: list[dict] | None = None
    text: str | None = None
    #: extra chat-template variables, e.g. {"enable_thinking": False} for judge and rater prompts
    #: on thinking models (a template that does not know a variable ignores it)
    chat_template_kwargs: dict | None = None
    #: how the chat template ends the prompt: a new assistant turn (the default), or the last
    #: (assistant) message left open for the model to continue (continue_final_message)
    add_generation_prompt: bool = True
    continue_final_message: bool = False

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.text is None):
            raise ValueError("Prompt needs exactly one of messages or text")
        if self.add_generation_prompt and self.continue_final_message:
            raise ValueError("add_generation_prompt and continue_final_message cannot both be true")


@dataclass
class Step:
    """One reasoning step: text ending in the delimiter, EOS, or a length cut.

    token_ids are in the tokenizer named by tokenizer_key. An engine with the same key
    reuses them as-is, so step boundaries never re-tokenize differently.
    """

    text: str
    token_ids: list[int]
    tokenizer_key: str
    stop_reason: StopReason
    source: Source = "target"
    # The verdict that decided this position, kept so thresholds can be calibrated from real
    # runs: on an accepted draft, the verdict that accepted it; on a target step emitted after a
    # rejection, the best rejected sibling's verdict and that draft's text.
    verifier: str | None = None
    score: float | None = None
    rejected_draft: str | None = None

    @property
    def finished(self) -> bool:
        """True when the answer ends with this step (EOS or total token budget)."""
        return self.stop_reason in ("eos", "budget")

    @property
    def ends_step(self) -> bool:
        """True when the step ends on the delimiter: a complete step that may have children."""
        return self.stop_reason == "delimiter"


@dataclass
class StepRequest:
    """Generate the next step after prompt + prefix steps."""

    prompt: Prompt
    prefix: list[Step]
    sampling: SamplingParams
    max_step_tokens: int
    max_total_tokens: int
    request_id: str = ""


@dataclass
class Verdict:
    accepted: bool
    score: float
    verifier: str
    detail: str = ""


@dataclass
class VerifyPair:
    """A drafted step and the target's own step at the same position and context."""

    prompt: Prompt
    prefix: list[Step]
    draft: Step
    target: Step


@dataclass
class Stats:
    mode: str = "lr"
    cycles: int = 0
    drafted_steps: int = 0  # draft generations, siblings and unreached depths included
    verified_steps: int = 0  # draft positions the verifier ruled on
    accepted_steps: int = 0
    target_steps: int = 0
    verified_by_depth: list[int] = field(default_factory=list)
    accepted_by_depth: list[int] = field(default_factory=list)
    aside_verdicts: int = 0  # verdicts on drafts the answer did not wait for (probes, late async drafts)
    draft_tokens: int = 0
    target_tokens: int = 0
    tokens: int = 0
    # seconds during which at least one call of the kind ran (overlapping calls count once)
    draft_s: float = 0.0
    target_s: float = 0.0
    verify_s: float = 0.0
    wall_s: float = 0.0
    cancelled_branches: int = 0
    degraded: list[str] = field(default_factory=list)
    # live timings by kind, what the adaptive depth policy estimates its costs from:
    # target_calls_by_rows[n-1] calls of n rows (or n target rows in flight, time-weighted) took
    # target_s_by_rows[n-1] seconds to write target_tokens_by_rows[n-1] tokens per row (summed over
    # calls: a call counts the mean of its rows' tokens, so a batch's straggler is in its time)
    draft_calls: int = 0  # one call drafts one position (its W siblings)
    verify_calls: int = 0
    target_calls_by_rows: list[int] = field(default_factory=list)
    target_s_by_rows: list[float] = field(default_factory=list)
    target_tokens_by_rows: list[float] = field(default_factory=list)
    # speculation depth chosen per cycle (index g), probe cycles, and the policy's last decision
    depth_counts: list[int] = field(default_factory=list)
    probes: int = 0
    policy: dict = field(default_factory=dict)
    policy_log: list[str] = field(default_factory=list)  # one line each time the decision changes
    # what each kind of cycle the policy chose cost ("plain" g = 0, "probe", "draft" g > 0): sums
    # of cycles, tokens, wall_s, draft_s, draft_calls, t1_s, t1_calls (orchestrator/policy.py
    # Ledger). Carried in the prior, so a new request knows what a probe costs before it runs one.
    cycle_costs: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_steps / self.verified_steps if self.verified_steps else 0.0

    def count_verified(self, depth: int, accepted: bool, used: bool = True) -> None:
        """One draft position ruled on at depth (0-based from the accepted prefix). `used=False`:
        a draft the answer did not wait for (a probe's, or in the async window one that finished
        after its target step), judged for the acceptance estimate only: counted like any
        verdict, and in aside_verdicts."""
        while len(self.verified_by_depth) <= depth:
            self.verified_by_depth.append(0)
            self.accepted_by_depth.append(0)
        self.verified_by_depth[depth] += 1
        self.verified_steps += 1
        if accepted:
            self.accepted_by_depth[depth] += 1
            self.accepted_steps += 1
        if not used:
            self.aside_verdicts += 1

    def count_target_call(self, rows: int, seconds: float, tokens: float = 0.0) -> None:
        while len(self.target_calls_by_rows) < rows:
            self.target_calls_by_rows.append(0)
            self.target_s_by_rows.append(0.0)
        while len(self.target_tokens_by_rows) < rows:
            self.target_tokens_by_rows.append(0.0)
        self.target_calls_by_rows[rows - 1] += 1
        self.target_s_by_rows[rows - 1] += seconds
        self.target_tokens_by_rows[rows - 1] += tokens

    def count_depth(self, depth: int) -> None:
        while len(self.depth_counts) <= depth:
            self.depth_counts.append(0)
        self.depth_counts[depth] += 1

    def accumulate(self, other: "Stats") -> None:
        """Add another session's counts and timings (a server's running totals, a prior)."""
        for name in ("cycles", "drafted_steps", "verified_steps", "accepted_steps", "target_steps",
                     "draft_tokens", "target_tokens", "tokens", "draft_s", "target_s", "verify_s", "wall_s",
                     "cancelled_branches", "draft_calls", "verify_calls", "probes", "aside_verdicts"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.verified_by_depth, other.verified_by_depth),
                             (self.accepted_by_depth, other.accepted_by_depth),
                             (self.target_calls_by_rows, other.target_calls_by_rows),
                             (self.target_s_by_rows, other.target_s_by_rows),
                             (self.target_tokens_by_rows, other.target_tokens_by_rows),
                             (self.depth_counts, other.depth_counts)):
            mine.extend([0] * (len(theirs) - len(mine)))
            for i, x in enumerate(theirs):
                mine[i] += x
        for kind, sums in other.cycle_costs.items():
            mine = self.cycle_costs.setdefault(kind, {})
            for k, x in sums.items():
                mine[k] = mine.get(k, 0.0) + x
        self.degraded = (self.degraded + other.degraded)[-20:]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_s_by_rows"] = [round(x, 4) for x in self.target_s_by_rows]
        d["target_tokens_by_rows"] = [round(x, 2) for x in self.target_tokens_by_rows]
        d["acceptance_rate"] = round(self.acceptance_rate, 4)
        d["acceptance_by_depth"] = [
            round(a / n, 4) if n else 0.0 for a, n in zip(self.accepted_by_depth, self.verified_by_depth)
        ]
        # nanoseconds: an exact verifier comparing a few token ids can take under a microsecond
        # per request, and the metrics built from this dict must still see its time move (CI once
        # rounded a whole request's verify time to 0 at microseconds)
        for k in ("draft_s", "target_s", "verify_s", "wall_s"):
            d[k] = round(d[k], 9)
        d["cycle_costs"] = {kind: {k: round(x, 9) for k, x in sums.items()} for kind, sums in self.cycle_costs.items()}
        return d


@dataclass
class GenerationResult:
    text: str
    steps: list[Step]
    stats: Stats
    finish_reason: str = "stop"

    def to_dict(self, rejected_drafts: bool = False) -> dict:
        return {
            "text": self.text,
            "mode": self.stats.mode,
            "finish_reason": self.finish_reason,
            "steps": [step_dict(s, rejected_drafts) for s in self.steps],
            "stats": self.stats.to_dict(),
        }


def step_dict(s: Step, rejected_drafts: bool = False) -> dict:
    """A step for JSON: text, source, tokens, and the verdict fields when a verifier ruled.

    The text of a rejected draft is included only when asked for (`rejected_drafts`): it is
    unverified small-model text, which a response shows only to a caller who wants it."""
    d: dict = {"text": s.text, "source": s.source, "tokens": len(s.token_ids)}
    if s.verifier is not None:
        d["verifier"] = s.verifier
        d["score"] = None if s.score is None else round(s.score, 4)
    if rejected_drafts and s.rejected_draft is not None:
        d["rejected_draft"] = s.rejected_draft
    return d
