"""Run benchmark configurations over questions: modes interleaved per question, one record each.

Every question runs every configuration before the next question starts, in an order
rotated by one per question, so that machine drift (other load, thermal state) and any
position effect fall on all configurations alike.
"""
from __future__ import annotations

import argparse
import sys
import time

from benchmarks.bench.engines import EnginePool, Metered
from benchmarks.grading import extract_answer, is_correct
from benchmarks.bench.modes import ModeSpec
from benchmarks.bench.strict_check import strict_review
from verifier.kinds import needs


class Runner:
    def __init__(self, args: argparse.Namespace, pool: EnginePool) -> None:
        self.args, self.pool = args, pool
        self._verifiers: dict[str, object] = {}  # verifier kind -> RecordingVerifier around it
        self.skipped: list[int] = []
        self.on_result = None  # called with (spec, row, GenerationResult) after each run (trace recording)
        # per configuration, the running totals of its earlier questions: under depth "auto" each
        # request's policy starts from them, as a Serve replica's sessions start from its history
        self._history: dict[str, object] = {}

    def app_config(self, spec: ModeSpec):
        """The AppConfig `lookahead generate` would build for this configuration."""
        from deployments.config import AppConfig

        a = self.args
        verifier = spec.verifier or a.verifier
        judge = a.judge
        if spec.lr and "judge" in needs(verifier).roles and not judge:
            judge = a.target  # the target judges: the same engine, loaded once (EnginePool key)
        return AppConfig.for_models(
            a.target, a.draft, judge, mode=spec.mode.name, engine=a.engine, device=a.device, dtype=a.dtype,
            batch_invariant=a.batch_invariant, sd_tokens=spec.sd_tokens or a.sd_tokens, verifier=verifier,
            target_cores=getattr(a, "target_cores", None), draft_cores=getattr(a, "draft_cores", None),
            threshold=a.threshold, numeric_guard=False if a.no_numeric_guard else None,
            depth=spec.depth or a.depth, width=spec.width, schedule=a.schedule, max_step_tokens=a.max_step_tokens,
            max_tokens=a.max_tokens, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k)

    def engines(self, spec: ModeSpec):
        cfg = self.app_config(spec)
        target = self.pool.get(cfg.target.engine)
        draft = self.pool.get(cfg.draft.engine) if spec.lr else None
        return cfg, target, draft

    def verifier(self, cfg):
        """One verifier per kind, shared by the lr configurations that use it. target-score
        rates with the plain target; llm-judge asks --judge, or the plain target without one.
        Each is wrapped to record the pairs it ruled on (benchmarks/bench/strict_check.py)."""
        kind = cfg.verifier.kind
        if kind not in self._verifiers:
            from benchmarks.bench.strict_check import RecordingVerifier
            from deployments.pipeline import build_verifier

            # the plain target only for a verifier that calls an engine: another copy of the
            # target is the largest thing a run can load (the sd modes' target speculates tokens)
            roles = needs(kind).roles
            plain = self.pool.get(self.app_config(ModeSpec("ar")).target.engine) if roles else None
            judge = self.pool.get(cfg.judge.engine) if cfg.judge else plain
            self._verifiers[kind] = RecordingVerifier(build_verifier(cfg.verifier, target=plain, judge=judge))
        return self._verifiers[kind]

    async def run_one(self, spec: ModeSpec, row: dict, order: int) -> dict:
        from deployments.api.request import RequestOptions
        from deployments.pipeline import lookahead_params
        from orchestrator.lookahead import generate
        from orchestrator.types import Prompt

        cfg, target, draft = self.engines(spec)
        verifier = self.verifier(cfg) if spec.lr else None
        params = lookahead_params(cfg.defaults, RequestOptions(seed=self.args.seed),
                                  token_speculation=cfg.target.engine.token_speculation)
        target_m = Metered(target)
        draft_m = Metered(draft) if draft is not None else None
        system = getattr(self.args, "system", None)
        prompt = Prompt(messages=([{"role": "system", "content": system}] if system else [])
                        + [{"role": "user", "content": row["question"]}])
        if verifier is not None:
            verifier.reset()
        history = self._history.get(spec.name)
        prior = history.to_dict() if history is not None and history.cycles else None
        t0 = time.perf_counter()
        result = await generate(target_m, prompt, params, draft_m, verifier, request_id=f"{spec.name}-{row['index']}",
                                prior=prior)
        latency = time.perf_counter() - t0
        if spec.lr:
            from orchestrator.types import Stats

            self._history.setdefault(spec.name, Stats()).accumulate(result.stats)
        if self.on_result is not None:
            self.on_result(spec, row, result)
        predicted = extract_answer(result.text)
        review = strict_review(result.steps, verifier.pairs) if verifier is not None else None
        return {
            "question": row["index"], "mode": spec.name, "order": order,
            "latency_s": round(latency, 4), "tokens": result.stats.tokens, "steps": len(result.steps),
            "finish_reason": result.finish_reason,
            "gold": row["gold"], "predicted": predicted, "correct": is_correct(predicted, row["gold"]),
            "text": result.text,
            "verifier": verifier.name if verifier is not None else None,
            "strict": review,
            "stats": result.stats.to_dict(),
            "target_meter": target_m.meter.to_dict(),
            "draft_meter": draft_m.meter.to_dict() if draft_m else None,
        }

    async def run_all(self, specs: list[ModeSpec], rows: list[dict], desc: str,
                      deadline: float | None = None) -> list[dict]:
        """Records of every spec on every row. With a `deadline` (perf_counter time), no new
        question starts once the mean question time so far would carry the run past it; the
        questions skipped are left in `self.skipped`."""
        from tqdm import tqdm

        records = []
        self.skipped = []
        t0 = time.perf_counter()
        with tqdm(total=len(rows) * len(specs), desc=desc, unit="run", file=sys.stderr,
                  disable=getattr(self.args, "quiet", False)) as bar:
            for qi, row in enumerate(rows):
                per_question = (time.perf_counter() - t0) / qi if qi else 0.0
                if deadline is not None and qi and time.perf_counter() + per_question > deadline:
                    self.skipped = [r["index"] for r in rows[qi:]]
                    print(f"\n{desc}: time budget reached after {qi} of {len(rows)} questions "
                          f"({per_question:.0f} s per question); skipping the rest", file=sys.stderr, flush=True)
                    break
                shift = qi % len(specs)
                for order, spec in enumerate(specs[shift:] + specs[:shift]):
                    bar.set_postfix_str(f"q{row['index']} {spec.name}")
                    rec = await self.run_one(spec, row, order)
                    records.append(rec)
                    bar.update(1)
        return records
