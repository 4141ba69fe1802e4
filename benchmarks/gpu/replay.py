"""Replay step acceptance on real engines: the verdicts are scripted, the decode cost is real.

A `Script` says, for each position of one answer, whether the draft there is accepted and
how many tokens the draft and the target step take. `ReplayEngine` is a StepEngine over a
forced-length decoder (a StaticDecoder with `StopTables.none`: every row runs exactly to its
token limit), so a 14B-class target really decodes each step's tokens, batched as the
orchestrator asks (sync: one call of g+1 rows; async: concurrent calls micro-batched);
`ReplayVerifier` rules by the script. Scripts come from recorded traces
(`benchmarks/bench/traces.py`) or from a seeded Bernoulli(b) draw per position.

The token ids are whatever the decoding model produces (random weights in the GPU benchmark);
steps carry them, so the context grows exactly as in a real run.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass

from deployments.engines.microbatch import MicroBatcher
from deployments.engines.rows import StepRow, step_limit
from orchestrator.types import Prompt, SamplingParams, Step, StepRequest, Verdict, VerifyPair

REPLAY_KEY = "replay"  # the tokenizer key of every replay engine: steps cross as token ids


def _unit(*parts) -> float:
    """A reproducible number in [0, 1) from the parts."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2 ** 64


@dataclass
class Script:
    """One answer's replay: per position, the verdict on the draft and both step lengths."""

    verdicts: list[bool | None]  # None: not recorded (drawn from `fallback_b`)
    draft_tokens: list[int]
    target_tokens: list[int]
    fallback_b: float = 0.5
    seed: int = 0

    @property
    def positions(self) -> int:
        return len(self.target_tokens)

    def verdict(self, p: int) -> bool:
        v = self.verdicts[p] if p < len(self.verdicts) else None
        return v if v is not None else _unit("verdict", self.seed, p) < self.fallback_b

    def length(self, role: str, p: int) -> int:
        lengths = self.draft_tokens if role == "draft" else self.target_tokens
        return lengths[min(p, len(lengths) - 1)]

    @classmethod
    def bernoulli(cls, b: float, positions: int, draft_tokens: int, target_tokens: int, seed: int) -> "Script":
        """Verdicts i.i.d. Bernoulli(b), seeded per position: sync and async see the same draws."""
        return cls([_unit("bernoulli", seed, p) < b for p in range(positions)],
                   [draft_tokens] * positions, [target_tokens] * positions, b, seed)

    @classmethod
    def from_trace(cls, question: dict, seed: int = 0) -> "Script":
        """A recorded question (one entry of a trace's `questions`). Lengths missing at a position
        (the draft at a position nobody drafted for) use the question's mean; unrecorded verdicts
        are drawn at the question's own acceptance rate."""
        pos = question["positions"]
        drafted = [p["draft_tokens"][0] for p in pos if p.get("draft_tokens")]
        targets = [p["target_tokens"] for p in pos if p.get("target_tokens")]
        mean_d = round(sum(drafted) / len(drafted)) if drafted else max(1, round(sum(p["tokens"] for p in pos) / len(pos)))
        mean_t = round(sum(targets) / len(targets)) if targets else mean_d
        verdicts = [None if p["verdict"] is None else p["verdict"] == "accepted" for p in pos]
        draft = [max(1, p["draft_tokens"][0] if p.get("draft_tokens") else
                     p["tokens"] if p["source"] == "draft" else mean_d) for p in pos]
        target = [max(1, p["target_tokens"] if p.get("target_tokens") else
                      p["tokens"] if p["source"] == "target" else mean_t) for p in pos]
        return cls(verdicts, draft, target, float(question.get("acceptance", 0.5)), seed)


def prompt_key(prompt: Prompt) -> str:
    return json.dumps([prompt.messages, prompt.text], sort_keys=True)


@dataclass
class ReplayRow(StepRow):
    """A decode row (as hf's and the static decoder's) that knows its place in the script."""

    position: int = 0  # the answer position this step is for
    last: bool = False  # the script's last position: the answer ends with this step


class ReplayEngine:
    """A StepEngine whose steps have the script's lengths, decoded for real by `decoder`.

    `decoder`: a forced-length StaticDecoder. `prompt_ids(prompt)` gives the prompt's token ids;
    `vocab`: the decoder's vocabulary (ids from another model are folded into it). With
    `lookup_k` > 0 every row decodes with prompt lookup (token-level speculation inside the step,
    greedy, one row at a time), its proposals counted in `spec_stats`.
    """

    def __init__(self, decoder, role: str, scripts: dict[str, Script], prompt_ids, vocab: int,
                 lookup_k: int = 0, max_batch: int = 8) -> None:
        if role not in ("draft", "target"):
            raise ValueError(f"role must be draft or target, not {role!r}")
        self.decoder, self.role, self.scripts = decoder, role, scripts
        self.prompt_ids, self.vocab, self.lookup_k, self.max_batch = prompt_ids, vocab, lookup_k, max_batch
        self.tokenizer_key = REPLAY_KEY
        self.spec_stats = {"spec_steps": 0, "draft_tokens": 0, "accepted_tokens": 0}
        self.calls = 0
        self.rows = 0
        self._lock = threading.Lock()
        self._batcher = MicroBatcher(self._run, max_batch)

    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        rows = [self._row(r) for r in requests]
        await self._batcher.submit(rows)
        return [self._step(req, row) for req, row in zip(requests, rows)]

    def _row(self, req: StepRequest) -> ReplayRow:
        script = self.scripts[prompt_key(req.prompt)]
        p = len(req.prefix)
        prompt = self.prompt_ids(req.prompt)
        generated = [t % self.vocab for s in req.prefix for t in s.token_ids]
        limit, budget_cut = step_limit(min(script.length(self.role, p), req.max_step_tokens),
                                       req.max_total_tokens - len(generated))
        return ReplayRow(prompt + generated, SamplingParams(), limit, budget_cut, position=p,
                         last=p >= script.positions - 1)

    def _step(self, req: StepRequest, row: ReplayRow) -> Step:
        if row.reason == "budget":
            reason = "budget"
        elif row.cancelled.is_set() and len(row.out) < row.limit:
            reason = "step_limit"
        elif row.last:
            reason = "eos"  # the scripted answer ends here
        else:
            reason = "delimiter"
        text = f"<{self.role} step {row.position}: {len(row.out)} tokens>"
        return Step(text, list(row.out), REPLAY_KEY, reason)

    def _run(self, rows: list[ReplayRow]) -> None:
        with self._lock:
            todo = [r for r in rows if not r.cancelled.is_set()]
            self.calls += 1
            self.rows += len(todo)
            if self.lookup_k:
                from deployments.engines.prompt_lookup import lookup_proposal

                for r in todo:
                    self.decoder.run_lookup(r, self.lookup_k, lookup_proposal, self.spec_stats)
            elif todo:
                self.decoder.run(todo)


class ReplayVerifier:
    """Rules on each pair by the script of its prompt at the pair's position."""

    name = "replay"

    def __init__(self, scripts: dict[str, Script]) -> None:
        self.scripts = scripts
        self.calls = 0

    async def verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        self.calls += 1
        out = []
        for pair in pairs:
            ok = self.scripts[prompt_key(pair.prompt)].verdict(len(pair.prefix))
            out.append(Verdict(ok, float(ok), self.name, "replayed"))
        return out
