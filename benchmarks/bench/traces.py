"""Step traces of real lr runs: per answer position, the verdict and the step lengths.

`lookahead bench run --record-traces DIR` records one JSON file per lr configuration (lr, lr+sd):
for every question, each position of the final answer with

- `verdict`: "accepted" (a draft was kept), "rejected" (the target's own step replaced the
  drafts judged there) or null (no draft was judged: the bonus step after a fully accepted
  cycle, or a position where drafting was not possible);
- `tokens`, `source`, `stop_reason` of the emitted step;
- `draft_tokens` (one per sibling) and `target_tokens`: the lengths of the draft and target
  steps generated at that position from the accepted context (null when none was);

plus `cycles`, the accept/reject sequence of each cycle by depth. `benchmarks/gpu/replay.py`
replays them on other engines: the acceptance is the recorded one, the decode cost is real.
"""
from __future__ import annotations

import datetime
import json
import re
from dataclasses import asdict
from pathlib import Path

TRACE_KIND = "lookahead-step-trace"
TRACE_VERSION = 1


class _Logged:
    """A StepEngine that logs each step's length under (role, accepted-context text)."""

    def __init__(self, engine, role: str, recorder: "TraceRecorder") -> None:
        self._engine, self._role, self._recorder = engine, role, recorder

    def __getattr__(self, name):
        return getattr(self._engine, name)

    async def generate_steps(self, requests):
        steps = await self._engine.generate_steps(requests)
        call: dict[tuple[str, str], list[dict]] = {}
        for req, st in zip(requests, steps):
            key = (self._role, "".join(s.text for s in req.prefix))
            call.setdefault(key, []).append({"tokens": len(st.token_ids), "stop_reason": st.stop_reason})
        self._recorder.log.update(call)  # a later call at the same context replaces an earlier one
        return steps


def position_records(steps, log: dict) -> list[dict]:
    """One record per position of the final answer (see the module docstring)."""
    out, prefix = [], ""
    for step in steps:
        drafts, targets = log.get(("draft", prefix)), log.get(("target", prefix))
        verdict = "accepted" if step.source == "draft" else "rejected" if step.verifier is not None else None
        out.append({
            "tokens": len(step.token_ids), "source": step.source, "stop_reason": step.stop_reason,
            "verdict": verdict, "score": step.score,
            "draft_tokens": [d["tokens"] for d in drafts] if drafts else None,
            "target_tokens": targets[0]["tokens"] if targets else None,
        })
        prefix += step.text
    return out


def cycles_of(positions: list[dict]) -> list[list[bool]]:
    """The accept/reject sequence of each cycle, by depth: a cycle ends at its first rejection or
    at a position nobody drafted for (the bonus step)."""
    cycles, cur = [], []
    for p in positions:
        if p["verdict"] == "accepted":
            cur.append(True)
        elif p["verdict"] == "rejected":
            cycles.append(cur + [False])
            cur = []
        elif cur:
            cycles.append(cur)
            cur = []
    if cur:
        cycles.append(cur)
    return cycles


class TraceRecorder:
    """Attach to a benchmarks.bench.runner.Runner: wraps its lr engines and collects a trace per run."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.log: dict[tuple[str, str], list[dict]] = {}
        self.traces: dict[str, dict] = {}  # spec name -> {"spec": ..., "questions": [...]}

    def attach(self, runner) -> None:
        engines = runner.engines

        def logged(spec):
            cfg, target, draft = engines(spec)
            if not spec.lr:
                return cfg, target, draft
            return cfg, _Logged(target, "target", self), _Logged(draft, "draft", self)

        runner.engines = logged
        runner.on_result = self.on_result
        self._runner = runner

    def on_result(self, spec, row: dict, result) -> None:
        log, self.log = self.log, {}
        if not spec.lr:
            return
        cfg = self._runner.app_config(spec)
        entry = self.traces.setdefault(spec.name, {
            "spec": asdict(spec),
            "draft": cfg.draft.engine.model if cfg.draft else None, "target": cfg.target.engine.model,
            "verifier": cfg.verifier.kind, "schedule": cfg.defaults.schedule,
            "max_step_tokens": cfg.defaults.max_step_tokens, "max_tokens": cfg.defaults.max_tokens,
            "questions": []})
        positions = position_records(result.steps, log)
        stats = result.stats
        entry["questions"].append({
            "question": row["index"], "finish_reason": result.finish_reason, "tokens": stats.tokens,
            "acceptance": round(stats.acceptance_rate, 4),
            "accepted_by_depth": list(stats.accepted_by_depth), "verified_by_depth": list(stats.verified_by_depth),
            "depth_counts": list(getattr(stats, "depth_counts", []) or []),
            "cycles": cycles_of(positions), "positions": positions,
        })

    def save(self, environment: dict | None = None) -> list[Path]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, entry in self.traces.items():
            stem = "-".join(_slug(x) for x in (name, entry["draft"], entry["target"], entry["verifier"]) if x)
            path = self.out_dir / f"{stem}.json"
            doc = {"kind": TRACE_KIND, "version": TRACE_VERSION,
                   "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "environment": environment or {}, **entry}
            path.write_text(json.dumps(doc, indent=1) + "\n")
            paths.append(path)
        return paths


def load_trace(path: str | Path) -> dict:
    doc = json.loads(Path(path).read_text())
    if doc.get("kind") != TRACE_KIND:
        raise ValueError(f"{path}: not a step trace (kind {doc.get('kind')!r})")
    if doc.get("version") != TRACE_VERSION:
        raise ValueError(f"{path}: trace version {doc.get('version')}, this code reads {TRACE_VERSION}")
    return doc


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", str(text)).strip("_")


def merge(docs: list[dict]) -> dict:
    """One trace from traces of the same configuration recorded in parts (a time-boxed run and
    its rest, `lookahead bench --skip`): the questions of all, in order, each question once."""
    if not docs:
        raise ValueError("no traces to merge")
    keys = ("spec", "draft", "target", "verifier", "schedule", "max_step_tokens", "max_tokens")
    first = docs[0]
    for doc in docs[1:]:
        differ = [k for k in keys if doc.get(k) != first.get(k)]
        if differ:
            raise ValueError(f"traces of different configurations ({', '.join(differ)} differ): not merged")
    seen = [q["question"] for doc in docs for q in doc["questions"]]
    if len(set(seen)) != len(seen):
        raise ValueError(f"a question is in more than one trace: {sorted(q for q in seen if seen.count(q) > 1)}")
    parts = [{"recorded": doc.get("recorded"), "environment": doc.get("environment"),
              "questions": [q["question"] for q in doc["questions"]]} for doc in docs]
    return {**first, "parts": parts, "questions": [q for doc in docs for q in doc["questions"]]}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.bench.traces",
                                description="merge traces of one configuration recorded in parts")
    p.add_argument("out", help="the merged trace (JSON)")
    p.add_argument("traces", nargs="+", help="trace files, in question order")
    args = p.parse_args(argv)
    doc = merge([load_trace(t) for t in args.traces])
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{args.out}: {len(doc['questions'])} questions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
