"""GPU benchmark: static-cache decode against the bandwidth bound, and Lookahead Reasoning's
realized speedup with replayed acceptance. One command, sized for one device call of at most
8 minutes (docs/gpu.md gives the exact call):

    python -m benchmarks.gpu.gpu_bench --device cuda --out $OUT    # on a GPU machine, stops itself by 440 s
    python -m benchmarks.gpu.gpu_bench --device cpu --smoke        # toy shapes on CPU, every section, no time cuts
    python -m benchmarks.gpu.gpu_bench --plot-only RESULT.json     # (re)draw the PNG from a result

THE WEIGHTS ARE RANDOM (bf16, shapes from the Qwen2.5 configs in benchmarks/gpu/model_shapes.py)
AND STEP ACCEPTANCE IS REPLAYED, not measured: decode cost depends on shapes only, so the
timings are real, but which drafts are accepted comes from a seeded Bernoulli(b) draw or from
traces recorded by `lookahead bench run --record-traces` on CPU with the packaged small models.

Sections, in this order (each in the JSON written to --out, with the device name in the file name):
- preflight: before anything is timed, the static path captured as the run captures it
  (CUDA graphs on CUDA) against full forwards of a toy model: plain decode, prefix reuse,
  prompt lookup; and whether every shape captured on this torch;
- bandwidth: measured device copy bandwidth (read + write bytes per second);
- decode: the draft and target sizes, ms/token at batch 1..g+1 on the static path
  (deployments/engines/static_decode.py), next to the bound weight bytes read per token /
  copy bandwidth; the other sizes are timed last (section `sizes`), when the GPU holds them alone;
- bernoulli: the orchestrator core (orchestrator/lookahead.py) with a draft and a target
  engine, b = 0.3/0.5/0.7/0.9, g = 1..6, sync and async: realized speedup over ar next to the
  cost model's prediction (benchmarks/cost_model.py) from the measured decode costs, and where
  one cycle's time goes; b = 0.5, g = 4 first, then the rest of g = 4, then the other depths;
- traces: the traces in --traces replayed at the large shapes, question by question;
- lr_sd: prompt lookup inside the target's steps (sd, lr+sd), token acceptance as measured;
- policy: depth "auto" (orchestrator/policy.py) at each b: its depth choices and speedup;
- sizes: ms/token of the other model sizes (1.5B, 7B, 32B);
- serve: not run by this script (see docs/gpu.md).
Time (benchmarks/gpu/gpu_budget.py): --budget-s counts from process start; after the draft and
target are timed, each section gets its share of the time left, a unit of work (a
configuration, a question, a size) starts only if its estimate fits, and what did not fit is
listed as skipped. The JSON is rewritten after every unit; at --hard-limit-s or on SIGTERM the
run writes what it has (JSON and PNG) and exits with status 3. --smoke has no budget: it runs
every unit of every section, on any machine.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import platform
import re
import sys
import time
from pathlib import Path

from benchmarks.gpu.gpu_budget import START, Budget, Output
from benchmarks.gpu.gpu_preflight import run_preflight
from benchmarks.gpu.gpu_report import B_VALUES, plot, summary_lines, times

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "benchmarks" / "results"
DEFAULT_TRACES = ROOT / "benchmarks" / "traces"
LABEL = ("RANDOM WEIGHTS (bf16 on GPU, fp32 on CPU; shapes of the Qwen2.5 configs) and REPLAYED STEP ACCEPTANCE "
         "(seeded Bernoulli or recorded traces): decode timings are real, acceptance is not measured here")
G_VALUES = (1, 2, 3, 4, 5, 6)
# shares of the time left once the draft and target are timed (each section's unused time goes on)
WEIGHTS = {"bernoulli": 0.30, "traces": 0.25, "lr_sd": 0.12, "policy": 0.12, "sizes": 0.21}
DEVICE_BUDGET_S = 400.0  # one call of at most 8 minutes: python start-up, this, the hard-limit margin
HARD_MARGIN_S = 40.0


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# -- bandwidth ---------------------------------------------------------------------------------
def measure_bandwidth(device: str, smoke: bool) -> dict:
    """Device-to-device copy: bytes read + bytes written per second (the rate at which decode
    can stream weights, at best)."""
    import torch

    n = (64 if smoke else 2048) << 20
    x = torch.empty(n, dtype=torch.uint8, device=device)
    x.fill_(1)
    y = torch.empty_like(x)
    y.copy_(x)
    _sync(device)
    reps = 5 if smoke else 20
    t0 = time.perf_counter()
    for _ in range(reps):
        y.copy_(x)
    _sync(device)
    dt = time.perf_counter() - t0
    del x, y
    return {"bytes": n, "reps": reps, "gb_per_s": round(2 * n * reps / dt / 1e9, 1)}


# -- decode ------------------------------------------------------------------------------------
class Pair:
    """A model of one shape, its forced-length static decoder, and what it measured."""

    def __init__(self, key, shape, model, decoder, dtype_bytes: int) -> None:
        self.key, self.shape, self.model, self.decoder = key, shape, model, decoder
        self.dtype_bytes = dtype_bytes
        self.ms_per_token: dict[int, float] = {}
        self.seconds = 0.0  # build, capture and timing together


def build(key: str, shape, args):
    import torch

    from benchmarks.gpu.model_shapes import random_model
    from deployments.engines.static_decode import StaticDecoder, StopTables

    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    t0 = time.perf_counter()
    model = random_model(shape, args.device, dtype, seed=sum(map(ord, key)))
    _sync(args.device)
    created = time.perf_counter() - t0
    # the target decodes g+1 rows for every g; the others are timed at 1 and g+1 for g = 4, 6;
    # a compiled draft gets batch 1 only (compiling takes tens of seconds per shape)
    capture = args.draft_capture if key == args.draft else args.capture
    buckets = (args.batches if key == args.target else
               [1] if capture == "compile" else sorted({1, min(5, max(args.batches)), max(args.batches)}))
    decoder = StaticDecoder(model, StopTables.none(shape.vocab), max_rows=max(buckets), max_len=args.max_len,
                            buckets=buckets, capture=capture, check_every=2)
    captured = decoder.warmup(lookup_k=[args.lookup_k] if key == args.target else [])
    log(f"{shape.name}: created in {created:.1f}s, captured {len(captured)} shapes in {sum(captured.values()):.1f}s")
    pair = Pair(key, shape, model, decoder, torch.finfo(dtype).bits // 8)
    pair.create_s, pair.capture_s = round(created, 2), captured
    return pair


def _rows(n: int, prompt: int, limit: int, vocab: int, salt: int):
    import torch

    from deployments.engines.rows import StepRow
    from orchestrator.types import SamplingParams

    g = torch.Generator().manual_seed(salt)
    return [StepRow(torch.randint(2, vocab, (prompt,), generator=g).tolist(), SamplingParams(), limit, False)
            for _ in range(n)]


def time_decode(pair: Pair, args, batch: int) -> float:
    """ms per decoded token at this batch: (one step of N tokens - one step of 1 token) / (N - 1),
    each from a fresh cache, so the prefill cancels out."""
    dec, vocab = pair.decoder, pair.shape.vocab
    best = {}
    for limit in (1, args.decode_tokens):
        times = []
        for rep in range(args.decode_reps):
            dec.reset()
            rows = _rows(batch, args.prompt_tokens, limit, vocab, salt=rep)
            _sync(args.device)
            t0 = time.perf_counter()
            dec.run(rows)
            _sync(args.device)
            times.append(time.perf_counter() - t0)
            assert all(len(r.out) == limit for r in rows), "forced-length decode returned a short row"
        best[limit] = min(times)
    dec.reset()
    return 1000 * (best[args.decode_tokens] - best[1]) / (args.decode_tokens - 1)


def decode_entry(pair: Pair, args, bandwidth: float) -> dict:
    weight_bytes = pair.shape.params_read_per_token * pair.dtype_bytes
    bound_ms = 1000 * weight_bytes / (bandwidth * 1e9)
    for b in pair.decoder.buckets:
        pair.ms_per_token[b] = time_decode(pair, args, b)
    ms1 = pair.ms_per_token[pair.decoder.buckets[0]]
    return {
        "shape": pair.shape.__dict__, "params": pair.shape.params, "weight_bytes_read_per_token": weight_bytes,
        "bound_ms": round(bound_ms, 4),
        "ms_per_token": {str(b): round(v, 4) for b, v in pair.ms_per_token.items()},
        "fraction_of_bound_batch1": round(bound_ms / ms1, 3) if ms1 > 0 else None,
        "batch_cost_ratio": {str(b): round(v / ms1, 3) for b, v in pair.ms_per_token.items()} if ms1 > 0 else {},
        "capture": pair.decoder.capture, "capture_s": pair.capture_s, "create_s": pair.create_s,
    }


def free(pair: Pair | None, device: str) -> None:
    import torch

    if pair is not None and pair.decoder is not None:
        pair.decoder.close()
        pair.decoder = pair.model = None
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def decode_one(key: str, shapes: dict, args, result: dict, bandwidth: float) -> Pair | None:
    """Build and time one size into result["decode"][key]; None (and the reason there) if it failed."""
    import torch

    t0 = time.perf_counter()
    pair = None
    try:
        pair = build(key, shapes[key], args)
        e = result["decode"][key] = decode_entry(pair, args, bandwidth)
        log(f"{pair.shape.name}: {e['ms_per_token']} ms/token, bound {e['bound_ms']:.3f} ms "
            f"({e['fraction_of_bound_batch1']} of bound at batch 1)")
    except Exception as exc:  # noqa: BLE001 - out of memory (32B on a smaller GPU) or a failure: go on
        oom = isinstance(exc, torch.OutOfMemoryError)
        result["decode"][key] = {"skipped" if oom else "error": f"{'out of memory: ' if oom else ''}{exc!r}"[:500]}
        log(f"{shapes[key].name}: {'out of memory' if oom else 'failed'}: {str(exc)[:200]}")
        free(pair, args.device)
        return None
    pair.seconds = time.perf_counter() - t0
    return pair


def sizes_section(args, shapes: dict, result: dict, budget: Budget, out: Output, bandwidth: float,
                  target_seconds: float) -> dict:
    """The other sizes of the decode table, each only if its estimated time fits (the target's
    time, per captured bucket, scaled by size)."""
    sec = budget.section("sizes")
    done, skipped, failed = [], [], []
    t_target = shapes[args.target].params
    per_bucket = target_seconds / max(1, len(args.batches))
    for key in [k for k in args.sizes if k not in (args.draft, args.target)]:
        n_buckets = 1 if args.capture == "compile" else len({1, min(5, max(args.batches)), max(args.batches)})
        est = per_bucket * n_buckets * max(0.25, shapes[key].params / t_target) + 5.0
        if not sec.fits(est):
            result["decode"][key] = {"skipped": f"time budget (estimated {est:.0f} s, {sec.left():.0f} s left)"}
            skipped.append(key)
            out.save()
            continue
        pair = decode_one(key, shapes, args, result, bandwidth)
        (done if pair else failed).append(key)  # failed: out of memory or an error, in result["decode"]
        free(pair, args.device)
        out.save()
    return {"timed": done, "skipped": skipped, "failed": failed}


# -- orchestrator runs ------------------------------------------------------------------------
class Harness:
    """The orchestrator core over replay engines of the draft and target pair."""

    def __init__(self, draft: Pair, target: Pair, args) -> None:
        import torch

        from benchmarks.gpu.replay import prompt_key

        self.draft, self.target, self.args = draft, target, args
        self.prompt_key = prompt_key
        self._prompt_ids: dict[str, list[int]] = {}
        self.vocab = min(draft.shape.vocab, target.shape.vocab)
        self._torch = torch
        self.ar_wall = 0.0  # the Bernoulli section's ar baseline, once measured

    def prompt_ids(self, prompt) -> list[int]:
        key = self.prompt_key(prompt)
        if key not in self._prompt_ids:
            g = self._torch.Generator().manual_seed(len(self._prompt_ids) + 7)
            self._prompt_ids[key] = self._torch.randint(2, self.vocab, (self.args.prompt_tokens,), generator=g).tolist()
        return self._prompt_ids[key]

    def engines(self, scripts: dict, lookup_k: int = 0):
        from benchmarks.gpu.replay import ReplayEngine, ReplayVerifier

        target = ReplayEngine(self.target.decoder, "target", scripts, self.prompt_ids, self.target.shape.vocab,
                              lookup_k=lookup_k, max_batch=max(self.args.batches))
        draft = ReplayEngine(self.draft.decoder, "draft", scripts, self.prompt_ids, self.draft.shape.vocab,
                             max_batch=max(self.args.batches))
        return target, draft, ReplayVerifier(scripts)

    def est_ar(self, tokens: int) -> float:
        """Rough seconds for ar over this many tokens: the target's batch-1 decode, doubled."""
        return 2 * tokens * self.target.ms_per_token.get(1, 0.0) / 1000 + 1.0

    def run(self, scripts: dict, mode: str, depth=4, schedule: str = "sync", lookup_k: int = 0) -> dict:
        """Every scripted answer once, in this mode; wall time and summed stats."""
        from orchestrator.lookahead import LookaheadParams, generate
        from orchestrator.types import Stats

        target, draft, verifier = self.engines(scripts, lookup_k)
        max_step = max(max(s.draft_tokens + s.target_tokens) for s in scripts.values())
        params = LookaheadParams(mode=mode, depth=depth, schedule=schedule, max_step_tokens=min(4096, max_step),
                                 max_tokens=10 ** 7)
        prompts = [_prompt_of(k) for k in scripts]

        async def go():
            total, stats = 0.0, Stats(mode=mode)
            depth_counts: list[int] = []
            for p in prompts:
                self.draft.decoder.reset()  # answers share no prefix: a clean cache for each
                self.target.decoder.reset()
                t0 = time.perf_counter()
                r = await generate(target, p, params, draft if mode == "lr" else None,
                                   verifier if mode == "lr" else None)
                total += time.perf_counter() - t0
                stats.accumulate(r.stats)
                dc = list(getattr(r.stats, "depth_counts", []) or [])
                depth_counts = [a + b for a, b in zip(depth_counts + [0] * len(dc), dc + [0] * len(depth_counts))]
            return total, stats, depth_counts

        wall, stats, depth_counts = asyncio.run(go())
        out = {"wall_s": round(wall, 4), "tokens": stats.tokens, "cycles": stats.cycles,
               "acceptance": round(stats.acceptance_rate, 4),
               "accepted_steps": stats.accepted_steps, "verified_steps": stats.verified_steps,
               "draft_s": round(stats.draft_s, 4), "target_s": round(stats.target_s, 4),
               "verify_s": round(stats.verify_s, 4),
               "target_calls": target.calls, "target_rows": target.rows,
               "target_rows_per_call": round(target.rows / target.calls, 3) if target.calls else None}
        if mode == "lr" and depth == "auto":
            out["depth_counts"] = depth_counts
            out["probes"] = stats.probes
        if lookup_k:
            st = target.spec_stats
            proposed = st["draft_tokens"]
            out["token_acceptance"] = round(st["accepted_tokens"] / proposed, 4) if proposed else 0.0
            out["lookup"] = dict(st)
        return out


def _prompt_of(key: str):
    from orchestrator.types import Prompt

    messages, text = json.loads(key)
    return Prompt(messages=messages, text=text)


def bernoulli_scripts(b: float, args, n_answers: int) -> dict:
    from benchmarks.gpu.replay import Script, prompt_key
    from orchestrator.types import Prompt

    return {prompt_key(Prompt(text=f"bernoulli answer {i}")):
            Script.bernoulli(b, args.positions, args.step_tokens, args.step_tokens, seed=1000 * i + int(b * 100))
            for i in range(n_answers)}


def _cost_inputs(g: int, draft: Pair, target: Pair, d_len: float, t_len: float) -> tuple[float, float] | None:
    """c and r of the cost model from the measured decode speeds: c = draft step / target step
    (ms/token times step length), r = target ms/token at batch g+1 over batch 1."""
    t1, tn, d1 = target.ms_per_token.get(1), target.ms_per_token.get(g + 1), draft.ms_per_token.get(1)
    if not (t1 and tn and d1):
        return None
    return (d1 * d_len) / (t1 * t_len), tn / t1


def predicted(b: float, g: int, draft: Pair, target: Pair, d_len: float = 1.0, t_len: float = 1.0) -> float | None:
    """The sync cost model: E(b, g) / (g c + r(g + 1)), c and r from the measured decode speeds."""
    from benchmarks.cost_model import predicted_speedup

    cr = _cost_inputs(g, draft, target, d_len, t_len)
    return round(predicted_speedup(b, g, *cr), 4) if cr else None


def grid_order(depths) -> list[tuple[float, int]]:
    """The Bernoulli grid by importance: b = 0.5 at g = 4 (the figure quoted), the other b at g = 4,
    then b = 0.5 at the other depths, then the rest."""
    gs = [4] + [g for g in (2, 6, 1, 3, 5) if g != 4] + sorted(set(depths) - {1, 2, 3, 4, 5, 6})
    bs = [0.5, 0.7, 0.3, 0.9]
    order = [(b, 4) for b in bs] + [(0.5, g) for g in gs[1:]] + [(b, g) for g in gs[1:] for b in bs[1:]]
    return [(b, g) for b, g in order if g in depths]


def bernoulli_section(h: Harness, args, entry: dict, sec, out: Output) -> None:
    ar_scripts = bernoulli_scripts(0.5, args, args.answers)  # ar ignores verdicts: one baseline for every b
    tokens = args.answers * args.positions * args.step_tokens
    if not sec.fits(h.est_ar(tokens)):
        entry["skipped_all"] = "time budget"
        return
    ar = entry["ar"] = h.run(ar_scripts, "ar")
    log(f"ar: {ar['wall_s']:.2f}s for {args.answers} answers x {args.positions} steps x {args.step_tokens} tokens")
    entry.update({"runs": [], "skipped": []})
    slowest = ar["wall_s"]
    for b, g in grid_order(args.depths):
        for schedule in ("sync", "async"):
            if not sec.fits(1.25 * slowest):
                entry["skipped"].append({"b": b, "g": g, "schedule": schedule})
                continue
            r = h.run(bernoulli_scripts(b, args, args.answers), "lr", depth=g, schedule=schedule)
            slowest = max(slowest, r["wall_s"])
            r.update({"b": b, "g": g, "schedule": schedule, "speedup": round(ar["wall_s"] / r["wall_s"], 4),
                      "predicted": predicted(b, g, h.draft, h.target),
                      "predicted_at_realized_b": predicted(r["acceptance"], g, h.draft, h.target)})
            entry["runs"].append(r)
            out.save()
        if (b, g) == (0.5, 4):
            entry["cycle_breakdown_b0.5_g4"] = _breakdown(entry["runs"])
            log("b=0.5 g=4: " + ", ".join(f"{r['schedule']} {times(r['speedup'])} (predicted {times(r['predicted'])})"
                                          for r in entry["runs"]))
    log(f"bernoulli grid: {len(entry['runs'])} runs, {len(entry['skipped'])} skipped")
    if sec.fits(1.25 * ar["wall_s"]):
        entry["ar_repeat"] = h.run(ar_scripts, "ar")  # drift check


def _breakdown(runs: list[dict]) -> dict:
    """Where one lr cycle's time goes at b = 0.5, g = 4 (sync): draft, target, verify, the rest."""
    for r in runs:
        if r["b"] == 0.5 and r["g"] == 4 and r["schedule"] == "sync" and r["cycles"]:
            n = r["cycles"]
            other = r["wall_s"] - r["draft_s"] - r["target_s"] - r["verify_s"]
            return {"cycles": n, "ms_per_cycle": {"draft": round(1000 * r["draft_s"] / n, 3),
                                                  "target": round(1000 * r["target_s"] / n, 3),
                                                  "verify": round(1000 * r["verify_s"] / n, 3),
                                                  "orchestration": round(1000 * other / n, 3)}}
    return {}


_SUMMED = ("wall_s", "tokens", "cycles", "accepted_steps", "verified_steps", "draft_s", "target_s", "verify_s",
           "target_calls", "target_rows")


def _add(total: dict, r: dict) -> None:
    for k in _SUMMED:
        total[k] = round(total.get(k, 0) + r[k], 4)
    v, calls = total["verified_steps"], total["target_calls"]
    total["acceptance"] = round(total["accepted_steps"] / v, 4) if v else 0.0
    total["target_rows_per_call"] = round(total["target_rows"] / calls, 3) if calls else None


def trace_section(h: Harness, args, entry: dict, sec, out: Output) -> None:
    """Each trace file, question by question (ar, lr sync, lr async per question) while the
    section's time lasts; speedups over the questions replayed."""
    from benchmarks.gpu.replay import Script, prompt_key
    from benchmarks.bench.traces import load_trace
    from orchestrator.cost_model import cycle_speedup
    from orchestrator.types import Prompt

    files = sorted(Path(args.traces).glob("*.json")) if Path(args.traces).is_dir() else []
    if not files:
        entry["skipped_all"] = f"no traces in {args.traces} (record them with lookahead bench run --record-traces)"
        return
    entry["files"] = []
    for path in files:
        doc = load_trace(path)
        questions = doc["questions"][:args.trace_questions] if args.trace_questions else doc["questions"]
        depth = doc["spec"].get("depth")
        g = depth if isinstance(depth, int) and depth > 0 else 4
        verified = [sum(col) for col in zip(*[q["verified_by_depth"] for q in questions])] if questions else []
        accepted = [sum(col) for col in zip(*[q["accepted_by_depth"] for q in questions])] if questions else []
        b = sum(accepted) / sum(verified) if sum(verified) else 0.0
        b_by_depth = [a / v for a, v in zip(accepted, verified) if v]
        scripts = [(prompt_key(Prompt(text=f"trace {path.stem} q{q['question']}")), Script.from_trace(q, seed=i))
                   for i, q in enumerate(questions)]
        positions = sum(s.positions for _, s in scripts) or 1
        d_len = sum(sum(s.draft_tokens) for _, s in scripts) / positions
        t_len = sum(sum(s.target_tokens) for _, s in scripts) / positions
        e = {"file": path.name, "draft": doc.get("draft"), "target": doc.get("target"), "verifier": doc.get("verifier"),
             "questions_recorded": len(doc["questions"]), "questions": 0, "questions_skipped": [],
             "recorded_acceptance": round(b, 4), "recorded_acceptance_by_depth": [round(x, 4) for x in b_by_depth],
             "g": g, "mean_draft_tokens": round(d_len, 2), "mean_target_tokens": round(t_len, 2),
             "predicted": predicted(b, g, h.draft, h.target, d_len, t_len), "ar": {},
             "runs": [{"schedule": s} for s in ("sync", "async")]}
        cr = _cost_inputs(g, h.draft, h.target, d_len, t_len)
        if cr and b_by_depth:  # the recorded acceptance by depth, not i.i.d.
            e["predicted_by_depth"] = round(cycle_speedup(b_by_depth, g, *cr), 4)
        entry["files"].append(e)
        per_question = None
        for (key, script), q in zip(scripts, questions):
            tokens = sum(script.target_tokens)
            est = per_question * tokens if per_question else 3 * h.est_ar(tokens)
            if not sec.fits(est):
                e["questions_skipped"].append(q["question"])
                continue
            t0 = time.perf_counter()
            one = {key: script}
            _add(e["ar"], h.run(one, "ar"))
            for r in e["runs"]:
                _add(r, h.run(one, "lr", depth=g, schedule=r["schedule"]))
                r["speedup"] = round(e["ar"]["wall_s"] / r["wall_s"], 4)
                r["predicted"] = e["predicted"]
            e["questions"] += 1
            per_question = 1.25 * (time.perf_counter() - t0) / max(1, tokens)
            out.save()
        if e["questions"]:
            log(f"trace {path.name}: {e['questions']} of {len(questions)} questions, b={b:.2f} g={g}: " + ", ".join(
                f"{r['schedule']} {times(r['speedup'])} (predicted {times(r['predicted'])})" for r in e["runs"]))
        else:
            e["runs"] = []


def lr_sd_section(h: Harness, args, entry: dict, sec, out: Output) -> None:
    scripts = bernoulli_scripts(0.5, args, args.answers)
    ar_wall = h.ar_wall
    est = 1.5 * ar_wall if ar_wall else h.est_ar(args.answers * args.positions * args.step_tokens)
    if not sec.fits(est):
        entry["skipped_all"] = "time budget"
        return
    sd = h.run(scripts, "ar", lookup_k=args.lookup_k)
    entry.update({"k": args.lookup_k, "sd": {**sd, "speedup": round(ar_wall / sd["wall_s"], 4) if ar_wall else None},
                  "lr_sd": []})
    out.save()
    for b in (0.5, 0.7):
        if not sec.fits(3.5 * sd["wall_s"]):  # the g+1 rows of a cycle decode one by one with lookup
            entry["lr_sd"].append({"b": b, "skipped": "time budget"})
            continue
        r = h.run(bernoulli_scripts(b, args, args.answers), "lr", depth=4, lookup_k=args.lookup_k)
        r.update({"b": b, "g": 4, "schedule": "sync", "speedup": round(ar_wall / r["wall_s"], 4) if ar_wall else None,
                  "speedup_over_sd": round(sd["wall_s"] / r["wall_s"], 4)})
        entry["lr_sd"].append(r)
        out.save()
    log(f"sd {times(entry['sd']['speedup'])} (token acceptance {sd['token_acceptance']}); lr+sd " + ", ".join(
        f"b={r['b']} {times(r['speedup'])}" for r in entry["lr_sd"] if "wall_s" in r))


def policy_section(h: Harness, args, entry: dict, sec, out: Output) -> None:
    try:
        import orchestrator.policy  # noqa: F401
    except ImportError:
        entry["skipped_all"] = "orchestrator/policy.py is absent: the adaptive policy was not run"
        return
    ar_wall = h.ar_wall
    entry["runs"] = []
    for b in B_VALUES:
        est = 1.5 * ar_wall if ar_wall else h.est_ar(args.answers * args.positions * args.step_tokens)
        if not sec.fits(est):
            entry["runs"].append({"b": b, "skipped": "time budget"})
            continue
        r = h.run(bernoulli_scripts(b, args, args.answers), "lr", depth="auto")
        r.update({"b": b, "speedup": round(ar_wall / r["wall_s"], 4) if ar_wall else None})
        entry["runs"].append(r)
        out.save()
    log("policy: " + ", ".join(f"b={r['b']} {times(r['speedup'])} depths {r.get('depth_counts')}"
                               for r in entry["runs"] if "wall_s" in r))


# -- main ---------------------------------------------------------------------------------------
def device_info(device: str) -> dict:
    import torch
    import transformers

    info = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        info.update({"name": torch.cuda.get_device_name(0), "memory_gb": round(p.total_memory / 2 ** 30, 1),
                     "cuda": torch.version.cuda})
    else:
        info["name"] = f"cpu ({platform.processor() or platform.machine()})"
    return info


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def result_path(result: dict, out: Path) -> Path:
    stem = "gpu_bench-" + ("smoke-" if result["config"].get("smoke") else "") + slug(result["device"]["name"])
    return out / f"{stem}.json"


def run(args) -> tuple[dict, list[Path]]:
    """Every section in order; the JSON is rewritten after each unit of work. Returns the result
    and the files written (JSON, PNG)."""
    import torch  # noqa: F401 - loaded here, inside the budget, so that its import time counts

    from benchmarks.gpu.model_shapes import QWEN25, SMOKE

    budget = Budget(args.budget_s, args.reserve_s, WEIGHTS)
    shapes = SMOKE if args.smoke else QWEN25
    result: dict = {"label": LABEL, "weights": "random", "acceptance": "replayed",
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "device": device_info(args.device), "config": dict(vars(args)), "notes": []}
    out = Output(result, result_path(result, Path(args.out)), plot, log)
    out.arm(args.hard_limit_s)
    try:
        out.save()
        log(f"{result['device']['name']}: {LABEL}")
        log(f"budget {args.budget_s} s, hard limit {args.hard_limit_s} s from process start; writing {out.json_path}")
        sections(args, shapes, result, budget, out)
    finally:  # an unexpected error too leaves the file of what was done
        out.disarm()
        result["timing"] = {"total_s": round(time.perf_counter() - START, 2), "budget_s": args.budget_s,
                            "hard_limit_s": args.hard_limit_s}
        paths = out.finish()
    return result, paths


def sections(args, shapes: dict, result: dict, budget: Budget, out: Output) -> None:
    run_preflight(args, result, log)
    out.save()
    bw = result["bandwidth"] = measure_bandwidth(args.device, args.smoke)
    log(f"copy bandwidth {bw['gb_per_s']} GB/s")
    out.save()

    # the draft and target first (everything after needs them), kept loaded for the orchestrator runs
    result["decode"] = {}
    draft = target = None
    if budget.fits(0.0):
        draft = decode_one(args.draft, shapes, args, result, bw["gb_per_s"])
        target = decode_one(args.target, shapes, args, result, bw["gb_per_s"]) if draft else None
    else:
        for key in (args.draft, args.target):
            result["decode"][key] = {"skipped": "time budget"}
    out.save()
    names = ("bernoulli", "traces", "lr_sd", "policy")
    if draft and target:
        t1, d1 = target.ms_per_token.get(1), draft.ms_per_token.get(1)
        result["ratios"] = {"draft": draft.shape.name, "target": target.shape.name,
                            "draft_over_target_per_token": round(d1 / t1, 4) if t1 else None}
        h = Harness(draft, target, args)
        for name, fn in zip(names, (bernoulli_section, trace_section, lr_sd_section, policy_section)):
            entry = result[name] = {}
            guarded(lambda: fn(h, args, entry, budget.section(name), out), entry, name)
            if name == "bernoulli":
                h.ar_wall = (entry.get("ar") or {}).get("wall_s", 0.0)
            out.save()
        target_seconds = target.seconds
    else:
        why = "time budget" if budget.left() <= 0 else "draft or target model could not be built"
        for name in names:
            result[name] = {"skipped_all": why}
        target_seconds = 0.0
    free(draft, args.device)  # the other sizes run alone on the device
    free(target, args.device)
    entry = result["sizes"] = {}
    if target_seconds or budget.unlimited:
        guarded(lambda: entry.update(sizes_section(args, shapes, result, budget, out, bw["gb_per_s"],
                                                   target_seconds)), entry, "sizes")
    else:
        why = "time budget" if budget.left() <= 0 else "the target was not timed (no estimate for the other sizes)"
        entry["skipped_all"] = why
        for key in args.sizes:
            result["decode"].setdefault(key, {"skipped": why})
    result["serve"] = {"skipped_all": "not run by this script: Ray Serve on the device needs carried wheels and "
                                      "engines Serve can build; see docs/gpu.md"}


def guarded(fn, entry: dict, name: str) -> None:
    """Run a section; its error goes into its entry: one failing section must not lose the others."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        log(f"{name}: failed: {exc!r}")
        entry["error"] = repr(exc)[:1000]


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu.gpu_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--smoke", action="store_true",
                   help="toy shapes, short answers and no time budget: every unit of every section runs")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--sizes", default="0.5b,1.5b,7b,14b,32b", help="model sizes for the decode table")
    p.add_argument("--draft", default="0.5b")
    p.add_argument("--target", default="14b")
    p.add_argument("--capture", choices=("graph", "compile", "none"), help="default: graph on CUDA, none on CPU")
    p.add_argument("--draft-capture", choices=("graph", "compile", "none"),
                   help="the draft model's capture (default: --capture); compile fuses the small kernels")
    p.add_argument("--budget-s", type=float,
                   help=f"seconds from process start after which no unit of work starts (default {DEVICE_BUDGET_S:g}; "
                        "none with --smoke)")
    p.add_argument("--hard-limit-s", type=float,
                   help=f"seconds from process start at which the run writes what it has and exits with status 3 "
                        f"(default: budget + {HARD_MARGIN_S:g})")
    p.add_argument("--reserve-s", type=float, default=None, help="seconds of the budget kept for writing results")
    p.add_argument("--answers", type=int, help="scripted answers per configuration")
    p.add_argument("--positions", type=int, help="steps per scripted answer")
    p.add_argument("--step-tokens", type=int, help="tokens per scripted step (draft and target)")
    p.add_argument("--prompt-tokens", type=int)
    p.add_argument("--decode-tokens", type=int, help="tokens per timed decode")
    p.add_argument("--decode-reps", type=int, default=2)
    p.add_argument("--max-len", type=int, help="static cache columns")
    p.add_argument("--lookup-k", type=int, default=4, help="prompt-lookup tokens per verify (lr+sd)")
    p.add_argument("--depths", default=",".join(map(str, G_VALUES)), help="depths g of the Bernoulli grid")
    p.add_argument("--batches", help="target batch buckets captured (default 1..max depth + 1; fewer for a "
                                     "compiled target, each shape costs minutes to compile)")
    p.add_argument("--traces", default=str(DEFAULT_TRACES))
    p.add_argument("--trace-questions", type=int, help="questions replayed per trace at most (0 = as time allows)")
    p.add_argument("--plot-only", metavar="JSON", help="draw the PNG of an existing result and exit")
    args = p.parse_args(argv)
    smoke = args.smoke
    defaults = {"capture": "graph" if args.device.startswith("cuda") else "none",
                "budget_s": None if smoke else DEVICE_BUDGET_S, "reserve_s": 5.0 if smoke else 15.0,
                "answers": 1, "positions": 4 if smoke else 12, "step_tokens": 8 if smoke else 32,
                "prompt_tokens": 16 if smoke else 128, "decode_tokens": 8 if smoke else 64,
                "max_len": 1024, "trace_questions": 1 if smoke else 0}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.hard_limit_s is None and args.budget_s is not None:
        args.hard_limit_s = args.budget_s + HARD_MARGIN_S
    if args.draft_capture is None:
        args.draft_capture = args.capture
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for k in (args.draft, args.target):
        if k not in args.sizes:
            args.sizes.append(k)
    args.depths = [int(x) for x in args.depths.split(",") if x.strip()]
    # 1 .. g+1 for every depth; a depth whose g+1 is not a bucket runs padded to the next one
    args.batches = (sorted({int(x) for x in args.batches.split(",") if x.strip()}) if args.batches
                    else list(range(1, max(args.depths) + 2)))
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.plot_only:
        result = json.loads(Path(args.plot_only).read_text())
        print(plot(result, Path(args.plot_only).with_suffix(".png")))
        return 0
    result, paths = run(args)
    print("\n".join(summary_lines(result)))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
