"""Plain data types that cross every boundary (engines, verifiers, Ray, gRPC).

They are dataclasses of builtins so they pickle cheaply and convert to JSON/protobuf
without custom code, in the spirit of vLLM's SamplingParams / RequestOutput.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
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

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def with_seed(self, seed: int | None) -> "SamplingParams":
        return SamplingParams(self.temperature, self.top_p, self.top_k, seed)


@dataclass
class Prompt:
    """What the user asked: chat messages or a raw completion prompt.

    Each engine renders it with its own tokenizer (chat template when it has one), which
    is what lets draft and target use different tokenizers.
    """

    messages: list[dict] | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.text is None):
            raise ValueError("Prompt needs exactly one of messages or text")


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
    draft_tokens: int = 0
    target_tokens: int = 0
    tokens: int = 0
    draft_s: float = 0.0
    target_s: float = 0.0
    verify_s: float = 0.0
    wall_s: float = 0.0
    cancelled_branches: int = 0
    degraded: list[str] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_steps / self.verified_steps if self.verified_steps else 0.0

    def count_verified(self, depth: int, accepted: bool) -> None:
        """One draft position ruled on at depth (0-based from the accepted prefix)."""
        while len(self.verified_by_depth) <= depth:
            self.verified_by_depth.append(0)
            self.accepted_by_depth.append(0)
        self.verified_by_depth[depth] += 1
        self.verified_steps += 1
        if accepted:
            self.accepted_by_depth[depth] += 1
            self.accepted_steps += 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["acceptance_rate"] = round(self.acceptance_rate, 4)
        d["acceptance_by_depth"] = [
            round(a / n, 4) if n else 0.0 for a, n in zip(self.accepted_by_depth, self.verified_by_depth)
        ]
        for k in ("draft_s", "target_s", "verify_s", "wall_s"):
            d[k] = round(d[k], 4)
        return d


@dataclass
class GenerationResult:
    text: str
    steps: list[Step]
    stats: Stats
    finish_reason: str = "stop"

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "mode": self.stats.mode,
            "finish_reason": self.finish_reason,
            "steps": [{"text": s.text, "source": s.source, "tokens": len(s.token_ids)} for s in self.steps],
            "stats": self.stats.to_dict(),
        }
