"""Each verifier's precision and recall on the labelled step pairs (tests/fixtures/step_pairs.jsonl).

The pairs are real (draft step, target step) pairs from GSM8K train questions, written by the
packaged models (benchmarks/verifiers/collect_pairs.py), plus hand-edited variants for the plan/list
cases real runs rarely produce; each carries a label (equivalent or not) and the reason.
Precision is what matters most: an accepted non-equivalent step changes the answer. A
dropped-computation plan step (a plan that leaves out an item) must never be accepted by a
profile's default verifier; the table counts them.

    python -m benchmarks.verifiers.verifier_eval                      # every verifier, tables + JSON
    python -m benchmarks.verifiers.verifier_eval --only exact,embedding+numeric+plan
    python -m benchmarks.verifiers.verifier_eval --agreed             # measure the same-results thresholds

Besides the overall precision and recall, each variant gets them per category (substitution,
sign, fraction, ..., same-result paraphrase). `--agreed` lists, per verifier kind, the inner
scores of the pairs whose steps compute and state the same results (the numeric guard agrees on
every result) by label, and the lowest threshold at which none of the wrong ones is accepted:
how the agreed thresholds of verifier/kinds.py were set.

Judge and rater run on qwen2.5-0.5b on CPU (the packaged model; the GPU profiles' judge is
larger): one `choice_probs` call per batch of pairs.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAIRS = ROOT / "tests" / "fixtures" / "step_pairs.jsonl"
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "verifier_eval.json"
#: the label categories for plan/list steps that leave a computation out
DROPPED = "plan-dropped-item"

#: the same-result paraphrases: both steps compute and state the same results in other words
SAME_RESULT = "same-result-paraphrase"

#: name -> (kind, numeric guard, plan guard, same-results threshold); "... alone" puts the guards in
#: front of an accept-all verifier, to show what the guards reject on their own. The guarded
#: variants of a kind use its agreed_threshold (verifier/kinds.py), as the profiles do;
#: "(no agreed)" shows the same guards with the inner verifier's own threshold everywhere.
VARIANTS: dict[str, tuple[str, bool, bool, bool]] = {
    "exact": ("exact", False, False, False),
    "normalized": ("normalized", False, False, False),
    "numeric guard alone": ("accept", True, False, False),
    "numeric+plan guards alone": ("accept", True, True, False),
    "embedding": ("embedding", False, False, False),
    "embedding+numeric": ("embedding", True, False, True),
    "embedding+numeric+plan (no agreed)": ("embedding", True, True, False),
    "embedding+numeric+plan": ("embedding", True, True, True),
    "llm-judge": ("llm-judge", False, False, False),
    "llm-judge+plan": ("llm-judge", False, True, False),
    "llm-judge+numeric+plan (no agreed)": ("llm-judge", True, True, False),
    "llm-judge+numeric+plan": ("llm-judge", True, True, True),
    "target-score": ("target-score", False, False, False),
    "target-score+plan": ("target-score", False, True, False),
    "target-score+numeric+plan (no agreed)": ("target-score", True, True, False),
    "target-score+numeric+plan": ("target-score", True, True, True),
}


def load_pairs(path: str | Path = PAIRS) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def verify_pairs(rows: list[dict]):
    """The rows as the VerifyPairs the orchestrator would hand a verifier."""
    from benchmarks.verifiers.collect_pairs import SYSTEM
    from orchestrator.types import Prompt, Step, VerifyPair

    out = []
    for r in rows:
        prompt = Prompt(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["question"]}])
        prefix = [Step(t, [], "text", "delimiter") for t in r["prefix"]]
        out.append(VerifyPair(prompt, prefix, Step(r["draft"], [], "text", r["draft_stop"], "draft"),
                              Step(r["target"], [], "text", r["target_stop"])))
    return out


class AcceptAll:
    """Accepts every pair: behind the guards, it measures what the guards alone let through."""

    name = "accept"

    async def verify(self, pairs):
        from orchestrator.types import Verdict

        return [Verdict(True, 1.0, self.name) for _ in pairs]


def build_bare(kind: str, scorer=None):
    """The verifier `kind` without guards (pre-check included), as the factory builds it."""
    from deployments.model_cache import resolve_model
    from verifier.factory import build_verifier

    if kind == "accept":
        return AcceptAll()
    return build_verifier(kind, numeric_guard=False, plan_guard=False,
                          embedding_model=resolve_model("minilm-l6") if kind == "embedding" else None,
                          judge=scorer, target=scorer)


def guarded_verdicts(pairs, bare, numeric: bool, plan: bool, inner_name: str = "accept",
                     agreed_threshold: float | None = None):
    """What GuardedVerifier(inner, numeric=, plan=, agreed_threshold=) rules, from the bare
    verifier's verdicts: the pre-check's ruling, else a guard's rejection, else the inner verdict
    (accepted at `agreed_threshold` where the steps state the same results). Equal to running it
    (tests/verifier/test_step_pairs.py checks one variant end to end) without asking the model twice."""
    from orchestrator.types import Verdict
    from verifier.numeric import GuardedVerifier
    from verifier.precheck import ruling

    if not (numeric or plan):
        return bare
    inner = AcceptAll()
    inner.name = inner_name
    guards = GuardedVerifier(inner, numeric=numeric, plan=plan, agreed_threshold=agreed_threshold)
    out = []
    for p, v in zip(pairs, bare):
        pre = ruling(p)
        if pre is not None:
            out.append(pre)
            continue
        ok, why, agreed = guards.rule(p)
        out.append(guards.decide(v, agreed) if ok else Verdict(False, 0.0, guards.name, why))
    return out


def _rates(rows: list[dict], verdicts) -> dict:
    tp = sum(v.accepted and r["label"] for r, v in zip(rows, verdicts))
    fp = sum(v.accepted and not r["label"] for r, v in zip(rows, verdicts))
    pos = sum(r["label"] for r in rows)
    return {"pairs": len(rows), "equivalent": pos, "accepted": tp + fp, "true_accepts": tp, "false_accepts": fp,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / pos, 4) if pos else None}


def score(rows: list[dict], verdicts) -> dict:
    """Precision, recall, the dropped-item plan steps accepted and the wrong pairs accepted, overall
    and per category, for one verifier's verdicts."""
    dropped = [r["id"] for r, v in zip(rows, verdicts) if v.accepted and r["category"] == DROPPED]
    false_accepts = [r["id"] for r, v in zip(rows, verdicts) if v.accepted and not r["label"]]
    by_category = {}
    for cat in sorted({r["category"] for r in rows}):
        picked = [(r, v) for r, v in zip(rows, verdicts) if r["category"] == cat]
        by_category[cat] = _rates([r for r, _ in picked], [v for _, v in picked])
    return {**_rates(rows, verdicts), "dropped_plan_accepted": dropped, "false_accept_ids": false_accepts,
            "by_category": by_category}


def agreed_scores(rows: list[dict], pairs, bare) -> list[tuple[float, bool, str]]:
    """(inner score, label, id) of the pairs both guards pass with the steps stating the same
    results (and that the pre-check does not rule on): where the same-results threshold applies."""
    from verifier.numeric import GuardedVerifier
    from verifier.precheck import ruling

    guards = GuardedVerifier(AcceptAll(), numeric=True, plan=True)
    out = []
    for r, p, v in zip(rows, pairs, bare):
        if ruling(p) is None:
            ok, _, agreed = guards.rule(p)
            if ok and agreed:
                out.append((float(v.score), bool(r["label"]), r["id"]))
    return sorted(out)


def lowest_safe_threshold(scored: list[tuple[float, bool, str]]) -> float | None:
    """The lowest threshold (one of the true pairs' scores) that accepts no wrong pair: just above
    the highest-scoring wrong pair. None when no true pair scores above every wrong one."""
    worst = max((s for s, label, _ in scored if not label), default=None)
    above = [s for s, label, _ in scored if label and (worst is None or s > worst)]
    return min(above) if above else None


def reused_verdicts(pairs, kind: str, previous: dict):
    """The bare verdicts of `kind` rebuilt from an earlier run's scores (`--reuse`): the pre-check's
    ruling where it rules, else score >= the kind's default threshold, as the verifier decides."""
    from orchestrator.types import Verdict
    from verifier.factory import DEFAULT_THRESHOLDS
    from verifier.precheck import ruling

    scores = previous[kind]["scores"]
    if len(scores) != len(pairs):
        raise ValueError(f"--reuse: {len(scores)} scores for {kind}, {len(pairs)} pairs")
    out = []
    for p, s in zip(pairs, scores):
        pre = ruling(p)
        out.append(pre if pre is not None else Verdict(s >= DEFAULT_THRESHOLDS[kind], s, kind, "reused"))
    return out


async def evaluate(rows: list[dict], names: list[str], scorer=None, batch: int = 8,
                   previous: dict | None = None) -> dict:
    """Each variant's scores. The model behind each kind runs once, on every pair; guarded
    variants reuse its verdicts (guarded_verdicts). With `previous` (an earlier run's results),
    the judge's and rater's bare verdicts come from its scores instead of the model."""
    from verifier.factory import AGREED_THRESHOLDS

    pairs = verify_pairs(rows)
    bare: dict[str, tuple[list, float, str]] = {}
    out = {}
    for name in names:
        kind, numeric, plan, use_agreed = VARIANTS[name]
        if kind not in bare and previous and kind in previous and kind in ("llm-judge", "target-score"):
            bare[kind] = (reused_verdicts(pairs, kind, previous), previous[kind]["seconds"], kind)
        if kind not in bare:
            verifier = build_bare(kind, scorer)
            t0 = time.perf_counter()
            verdicts = []
            for i in range(0, len(pairs), batch):
                verdicts += await verifier.verify(pairs[i:i + batch])
            bare[kind] = (verdicts, round(time.perf_counter() - t0, 1), verifier.name)
            print(f"{kind}: {bare[kind][1]}s", file=sys.stderr, flush=True)
        agreed = AGREED_THRESHOLDS.get(kind) if use_agreed else None
        verdicts = guarded_verdicts(pairs, bare[kind][0], numeric, plan, bare[kind][2], agreed)
        out[name] = {**score(rows, verdicts), "seconds": bare[kind][1], "agreed_threshold": agreed,
                     "scores": [None if v.score is None else round(v.score, 4) for v in verdicts]}
        if kind not in ("exact", "normalized", "accept") and not numeric and not plan:
            scored = agreed_scores(rows, pairs, bare[kind][0])
            out[name]["agreed_pairs"] = [{"score": round(s, 4), "label": label, "id": i} for s, label, i in scored]
            out[name]["lowest_safe_agreed_threshold"] = lowest_safe_threshold(scored)
    return out


def _f(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(results: dict, rows: list[dict]) -> str:
    cats: dict[str, int] = {}
    for r in rows:
        cats[r["category"]] = cats.get(r["category"], 0) + 1
    lines = [f"{len(rows)} pairs, {sum(r['label'] for r in rows)} equivalent; categories: "
             + ", ".join(f"{k} {v}" for k, v in sorted(cats.items())), "",
             "| verifier | accepted | false accepts | precision | recall | dropped-item plan steps accepted | s |",
             "|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        lines.append(f"| {name} | {m['accepted']} | {m['false_accepts']} | {_f(m['precision'])} | {_f(m['recall'])} | "
                     f"{len(m['dropped_plan_accepted'])} | {m['seconds']} |")
    return "\n".join(lines)


def category_table(results: dict, rows: list[dict]) -> str:
    """Per category (pairs, equivalent): each variant's accepted wrong pairs and recall, as
    "false accepts / recall" (recall "-" where the category has no equivalent pair)."""
    cats = sorted({r["category"] for r in rows})
    names = list(results)
    lines = ["| category | pairs (equivalent) | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for cat in cats:
        first = results[names[0]]["by_category"][cat]
        cells = []
        for n in names:
            c = results[n]["by_category"][cat]
            cells.append(f"{c['false_accepts']} wrong / {_f(c['recall'])}")
        lines.append(f"| {cat} | {first['pairs']} ({first['equivalent']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def agreed_table(results: dict) -> str:
    """Per bare semantic verifier: the scores of the same-results pairs by label, and the lowest
    threshold that accepts none of the wrong ones."""
    lines = []
    for name, m in results.items():
        if "agreed_pairs" not in m:
            continue
        good = [p["score"] for p in m["agreed_pairs"] if p["label"]]
        bad = [p["score"] for p in m["agreed_pairs"] if not p["label"]]
        lines.append(f"{name}: {len(good)} equivalent same-results pairs, scores {sorted(good)}; "
                     f"{len(bad)} wrong ones, scores {sorted(bad)}; lowest safe threshold "
                     f"{m['lowest_safe_agreed_threshold']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.verifiers.verifier_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", default=str(PAIRS))
    p.add_argument("--only", default=None, help="comma-separated names from: " + ", ".join(VARIANTS))
    p.add_argument("--scorer", default="qwen2.5-0.5b", help="model for llm-judge and target-score (hf, CPU)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--reuse", metavar="JSON", help="take the judge's and rater's scores from an earlier run's JSON "
                   "(same pairs) instead of running the model again")
    p.add_argument("--agreed", action="store_true", help="also print the same-results scores and thresholds")
    p.add_argument("--categories", default=None, metavar="A,B,...",
                   help="variants in the per-category table (default: the profiles' defaults, "
                        "exact and embedding+numeric+plan, and llm-judge+numeric+plan when it ran)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown verifier(s) {unknown}")
    rows = load_pairs(args.pairs)
    previous = json.loads(Path(args.reuse).read_text())["results"] if args.reuse else None
    scorer = None
    if any(VARIANTS[n][0] in ("llm-judge", "target-score") and VARIANTS[n][0] not in (previous or {})
           for n in names):
        from deployments.config import EngineConfig
        from deployments.engines.hf import HFEngine

        scorer = HFEngine(EngineConfig(model=args.scorer, device="cpu"))
    results = asyncio.run(evaluate(rows, names, scorer, previous=previous))
    print(table(results, rows))
    wanted = ([n.strip() for n in args.categories.split(",")] if args.categories else
              [n for n in ("exact", "embedding+numeric+plan", "llm-judge+numeric+plan", "target-score+numeric+plan")
               if n in results])
    print()
    # none of the defaults ran (--only embedding): the table of what did run
    print(category_table({n: results[n] for n in (wanted or results) if n in results}, rows))
    if args.agreed:
        print()
        print(agreed_table(results))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"pairs": args.pairs, "scorer": args.scorer, "reused": args.reuse,
                                          "results": results},
                                         indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
