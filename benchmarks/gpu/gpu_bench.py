"""GPU benchmark: static-cache decode against the bandwidth bound, and Lookahead Reasoning's
realized speedup with replayed acceptance. One command, sized for one 10-minute device call:

    python -m benchmarks.gpu.gpu_bench --device cuda              # on a GPU machine
    python -m benchmarks.gpu.gpu_bench --device cpu --smoke       # toy shapes on CPU, about a minute
    python -m benchmarks.gpu.gpu_bench --plot-only RESULT.json    # (re)draw the PNG from a result

THE WEIGHTS ARE RANDOM (bf16, shapes from the Qwen2.5 configs in benchmarks/gpu/model_shapes.py)
AND STEP ACCEPTANCE IS REPLAYED, not measured: decode cost depends on shapes only, so the
timings are real, but which drafts are accepted comes from a seeded Bernoulli(b) draw or from
traces recorded by `lookahead bench --record-traces` on CPU with the packaged small models.

Sections (each also in the JSON written to --out, with the device name in the file name):
- bandwidth: measured device copy bandwidth (read + write bytes per second);
- decode: per model size, ms/token at batch 1..g+1 on the static path
  (deployments/engines/static_decode.py, CUDA-graph captured), next to the bound
  weight bytes read per token / copy bandwidth;
- bernoulli: the orchestrator core (orchestrator/lookahead.py) with a draft and a target
  engine, b = 0.3/0.5/0.7/0.9, g = 1..6, sync and async: realized speedup over ar next to the
  cost model's prediction (benchmarks/cost_model.py) from the measured decode costs, and where
  one cycle's time goes;
- traces: every trace in --traces replayed at the large shapes;
- lr_sd: prompt lookup inside the target's steps (sd, lr+sd), token acceptance as measured;
- policy: depth "auto" (orchestrator/policy.py) at each b: its depth choices and speedup;
- serve: not run by this script (see docs/gpu.md).
Sections are run in order of importance and skipped, with a note, when the time budget
(--budget-s) would be exceeded.
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

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "benchmarks" / "results"
DEFAULT_TRACES = ROOT / "benchmarks" / "traces"
LABEL = ("RANDOM WEIGHTS (bf16 on GPU, fp32 on CPU; shapes of the Qwen2.5 configs) and REPLAYED STEP ACCEPTANCE "
         "(seeded Bernoulli or recorded traces): decode timings are real, acceptance is not measured here")
B_VALUES = (0.3, 0.5, 0.7, 0.9)
G_VALUES = (1, 2, 3, 4, 5, 6)
SECTIONS = ("bandwidth", "decode", "bernoulli", "traces", "lr_sd", "policy", "serve")


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.t0 = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)


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


def build(key: str, shape, args, clock: Clock):
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
    clock.log(f"{shape.name}: created in {created:.1f}s, captured {len(captured)} shapes in "
              f"{sum(captured.values()):.1f}s")
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


def decode_entry(pair: Pair, args, bandwidth: float, batches) -> dict:
    weight_bytes = pair.shape.params_read_per_token * pair.dtype_bytes
    bound_ms = 1000 * weight_bytes / (bandwidth * 1e9)
    for b in batches:
        pair.ms_per_token[b] = time_decode(pair, args, b)
    ms1 = pair.ms_per_token[batches[0]]
    return {
        "shape": pair.shape.__dict__, "params": pair.shape.params, "weight_bytes_read_per_token": weight_bytes,
        "bound_ms": round(bound_ms, 4),
        "ms_per_token": {str(b): round(v, 4) for b, v in pair.ms_per_token.items()},
        "fraction_of_bound_batch1": round(bound_ms / ms1, 3) if ms1 > 0 else None,
        "batch_cost_ratio": {str(b): round(v / ms1, 3) for b, v in pair.ms_per_token.items()} if ms1 > 0 else {},
        "capture": pair.decoder.capture, "capture_s": pair.capture_s, "create_s": pair.create_s,
    }


def free(pair: Pair, device: str) -> None:
    import torch

    pair.decoder.close()
    pair.decoder = pair.model = None
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


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
               "draft_s": round(stats.draft_s, 4), "target_s": round(stats.target_s, 4),
               "verify_s": round(stats.verify_s, 4),
               "target_rows_per_call": round(target.rows / target.calls, 3) if target.calls else None}
        if mode == "lr" and depth == "auto":
            out["depth_counts"] = depth_counts
            out["probes"] = stats.probes
        if lookup_k:
            st = target.spec_stats
            out["token_acceptance"] = round(st["accepted_tokens"] / st["draft_tokens"], 4) if st["draft_tokens"] else 0.0
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


def predicted(b: float, g: int, draft: Pair, target: Pair, d_len: float = 1.0, t_len: float = 1.0) -> float | None:
    """The sync cost model: E(b, g) / (g c + r(g + 1)), c and r from the measured decode speeds."""
    from benchmarks.cost_model import predicted_speedup

    t1 = target.ms_per_token.get(1)
    tn = target.ms_per_token.get(g + 1)
    d1 = draft.ms_per_token.get(1)
    if not (t1 and tn and d1):
        return None
    c = (d1 * d_len) / (t1 * t_len)
    return round(predicted_speedup(b, g, c, tn / t1), 4)


def bernoulli_section(h: Harness, args, clock: Clock) -> dict:
    ar_scripts = bernoulli_scripts(0.5, args, args.answers)  # ar ignores verdicts: one baseline for every b
    ar = h.run(ar_scripts, "ar")
    clock.log(f"ar: {ar['wall_s']:.2f}s for {args.answers} answers x {args.positions} steps x {args.step_tokens} tokens")
    order = [(0.5, 4)] + [(b, g) for b in B_VALUES for g in args.depths if (b, g) != (0.5, 4)]
    runs, skipped = [], []
    for b, g in order:
        for schedule in ("sync", "async"):
            if clock.left() < args.reserve_s + 2 * ar["wall_s"]:
                skipped.append({"b": b, "g": g, "schedule": schedule})
                continue
            r = h.run(bernoulli_scripts(b, args, args.answers), "lr", depth=g, schedule=schedule)
            r.update({"b": b, "g": g, "schedule": schedule, "speedup": round(ar["wall_s"] / r["wall_s"], 4),
                      "predicted": predicted(b, g, h.draft, h.target),
                      "predicted_at_realized_b": predicted(r["acceptance"], g, h.draft, h.target)})
            runs.append(r)
        if (b, g) == (0.5, 4):
            clock.log("b=0.5 g=4: " + ", ".join(f"{r['schedule']} {r['speedup']:.2f}x (predicted {r['predicted']})"
                                                for r in runs))
    clock.log(f"bernoulli grid: {len(runs)} runs, {len(skipped)} skipped")
    ar_again = h.run(ar_scripts, "ar")  # drift check
    return {"ar": ar, "ar_repeat": ar_again, "runs": runs, "skipped": skipped,
            "cycle_breakdown_b0.5_g4": _breakdown(runs), "draft": h.draft.shape.name, "target": h.target.shape.name}


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


def trace_section(h: Harness, args, clock: Clock) -> dict:
    from benchmarks.gpu.replay import Script, prompt_key
    from benchmarks.bench.traces import load_trace
    from orchestrator.types import Prompt

    files = sorted(Path(args.traces).glob("*.json")) if Path(args.traces).is_dir() else []
    if not files:
        return {"skipped": f"no traces in {args.traces} (record them with lookahead bench --record-traces)"}
    out = []
    for path in files:
        if clock.left() < args.reserve_s + 10:
            out.append({"file": path.name, "skipped": "time budget"})
            continue
        doc = load_trace(path)
        questions = doc["questions"][:args.trace_questions] if args.trace_questions else doc["questions"]
        scripts = {prompt_key(Prompt(text=f"trace {path.stem} q{q['question']}")): Script.from_trace(q, seed=i)
                   for i, q in enumerate(questions)}
        depth = doc["spec"].get("depth")
        g = depth if isinstance(depth, int) and depth > 0 else 4
        verified = sum(sum(q["verified_by_depth"]) for q in questions)
        b = sum(sum(q["accepted_by_depth"]) for q in questions) / verified if verified else 0.0
        d_len = sum(sum(s.draft_tokens) for s in scripts.values()) / sum(s.positions for s in scripts.values())
        t_len = sum(sum(s.target_tokens) for s in scripts.values()) / sum(s.positions for s in scripts.values())
        ar = h.run(scripts, "ar")
        entry = {"file": path.name, "draft": doc.get("draft"), "target": doc.get("target"), "verifier": doc.get("verifier"),
                 "questions": len(questions), "recorded_acceptance": round(b, 4), "g": g,
                 "mean_draft_tokens": round(d_len, 2), "mean_target_tokens": round(t_len, 2), "ar": ar, "runs": []}
        for schedule in ("sync", "async"):
            r = h.run(scripts, "lr", depth=g, schedule=schedule)
            r.update({"schedule": schedule, "speedup": round(ar["wall_s"] / r["wall_s"], 4),
                      "predicted": predicted(b, g, h.draft, h.target, d_len, t_len)})
            entry["runs"].append(r)
        clock.log(f"trace {path.name}: b={b:.2f} g={g}: " + ", ".join(
            f"{r['schedule']} {r['speedup']:.2f}x (predicted {r['predicted']})" for r in entry["runs"]))
        out.append(entry)
    return {"files": out}


def lr_sd_section(h: Harness, args, clock: Clock, ar_wall: float) -> dict:
    scripts = bernoulli_scripts(0.5, args, args.answers)
    sd = h.run(scripts, "ar", lookup_k=args.lookup_k)
    out = {"k": args.lookup_k, "sd": {**sd, "speedup": round(ar_wall / sd["wall_s"], 4)}, "lr_sd": []}
    for b in (0.5, 0.7):
        if clock.left() < args.reserve_s + 2 * ar_wall:
            out["lr_sd"].append({"b": b, "skipped": "time budget"})
            continue
        r = h.run(bernoulli_scripts(b, args, args.answers), "lr", depth=4, lookup_k=args.lookup_k)
        r.update({"b": b, "g": 4, "schedule": "sync", "speedup": round(ar_wall / r["wall_s"], 4)})
        out["lr_sd"].append(r)
    clock.log(f"sd {out['sd']['speedup']:.2f}x (token acceptance {sd['token_acceptance']}); lr+sd " + ", ".join(
        f"b={r['b']} {r['speedup']:.2f}x" for r in out["lr_sd"] if "speedup" in r))
    return out


def policy_section(h: Harness, args, clock: Clock, ar_wall: float) -> dict:
    try:
        import orchestrator.policy  # noqa: F401
    except ImportError:
        note = "orchestrator/policy.py is absent: the adaptive policy was not run"
        print(note, file=sys.stderr)
        return {"skipped": note}
    runs = []
    for b in B_VALUES:
        if clock.left() < args.reserve_s + 2 * ar_wall:
            runs.append({"b": b, "skipped": "time budget"})
            continue
        r = h.run(bernoulli_scripts(b, args, args.answers), "lr", depth="auto")
        r.update({"b": b, "speedup": round(ar_wall / r["wall_s"], 4)})
        runs.append(r)
    clock.log("policy: " + ", ".join(f"b={r['b']} {r['speedup']:.2f}x depths {r.get('depth_counts')}"
                                     for r in runs if "speedup" in r))
    return {"runs": runs}


# -- main ---------------------------------------------------------------------------------------
def device_info(device: str) -> dict:
    import torch
    import transformers

    info = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        info.update({"name": torch.cuda.get_device_name(0), "memory_gb": round(p.total_memory / 2 ** 30, 1)})
    else:
        info["name"] = f"cpu ({platform.processor() or platform.machine()})"
    return info


def preflight(device: str, capture: str) -> dict:
    """The static path on this device, captured as the run captures it, against full forwards on a
    toy model: the greedy tokens must be equal."""
    import torch

    from benchmarks.gpu.model_shapes import SMOKE, random_model
    from deployments.engines.rows import StepRow
    from deployments.engines.static_decode import StaticDecoder, StopTables
    from orchestrator.types import SamplingParams

    model = random_model(SMOKE["0.5b"], device, torch.float32, seed=5)
    dec = StaticDecoder(model, StopTables.none(2048), max_rows=2, max_len=64, buckets=[2], capture=capture)
    try:
        rows = [StepRow([3, 4, 5, 6], SamplingParams(), 6, False), StepRow([7, 8], SamplingParams(), 6, False)]
        dec.run(rows)
        ref = []
        with torch.inference_mode():
            for r in rows:
                ctx = list(r.ids)
                for _ in range(6):
                    ctx.append(int(model(input_ids=torch.tensor([ctx], device=device)).logits[0, -1].argmax()))
                ref.append(ctx[len(r.ids):])
        return {"capture": capture, "static_equals_full_forward": [r.out for r in rows] == ref}
    finally:
        dec.close()


def run(args) -> dict:
    import torch

    from benchmarks.gpu.model_shapes import QWEN25, SMOKE

    clock = Clock(args.budget_s)
    shapes = SMOKE if args.smoke else QWEN25
    result: dict = {"label": LABEL, "weights": "random", "acceptance": "replayed",
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "device": device_info(args.device), "config": {k: v for k, v in vars(args).items()},
                    "notes": []}
    clock.log(f"{result['device']['name']}: {LABEL}")
    try:
        result["preflight"] = preflight(args.device, args.capture)
    except Exception as exc:  # noqa: BLE001 - recorded; the run goes on uncaptured
        result["preflight"] = {"capture": args.capture, "static_equals_full_forward": False, "error": repr(exc)[:500]}
        result["notes"].append(f"capture {args.capture!r} failed in preflight; the run uses capture 'none'")
        args.capture = args.draft_capture = "none"
    if not result["preflight"]["static_equals_full_forward"]:
        result["notes"].append("preflight FAILED: static decode differs from full forwards on this device")
    clock.log(f"preflight: {result['preflight']}")
    bw = measure_bandwidth(args.device, args.smoke)
    result["bandwidth"] = bw
    clock.log(f"copy bandwidth {bw['gb_per_s']} GB/s")

    # decode: every size; the draft and target stay loaded for the orchestrator sections
    order = [k for k in args.sizes if k not in (args.draft, args.target)] + [args.draft, args.target]
    keep: dict[str, Pair] = {}
    result["decode"] = {}
    for key in order:
        if clock.left() < args.reserve_s + 60 and key not in (args.draft, args.target):
            result["decode"][key] = {"skipped": "time budget"}
            continue
        pair = None
        try:
            pair = build(key, shapes[key], args, clock)
            result["decode"][key] = decode_entry(pair, args, bw["gb_per_s"], pair.decoder.buckets)
            e = result["decode"][key]
            clock.log(f"{pair.shape.name}: {e['ms_per_token']} ms/token, bound {e['bound_ms']:.3f} ms "
                      f"({e['fraction_of_bound_batch1']} of bound at batch 1)")
        except Exception as exc:  # noqa: BLE001 - out of memory (32B on a smaller GPU) or a failure: go on
            oom = isinstance(exc, torch.OutOfMemoryError)
            result["decode"][key] = {"skipped" if oom else "error": f"{'out of memory: ' if oom else ''}{exc!r}"[:500]}
            clock.log(f"{shapes[key].name}: {'out of memory' if oom else 'failed'}: {str(exc)[:200]}")
            if pair is not None and pair.decoder is not None:
                free(pair, args.device)
            pair = None
            gc.collect()
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            continue
        if key in (args.draft, args.target):
            keep[key] = pair
        else:
            free(pair, args.device)
    draft, target = keep.get(args.draft), keep.get(args.target)
    if draft and target:
        t1, d1 = target.ms_per_token.get(1), draft.ms_per_token.get(1)
        result["ratios"] = {"draft": draft.shape.name, "target": target.shape.name,
                            "draft_over_target_per_token": round(d1 / t1, 4) if t1 else None}
        h = Harness(draft, target, args)
        result["bernoulli"] = guarded(lambda: bernoulli_section(h, args, clock), clock, "bernoulli")
        ar_wall = (result["bernoulli"].get("ar") or {}).get("wall_s", 0.0)
        for name, fn in (("traces", lambda: trace_section(h, args, clock)),
                         ("lr_sd", lambda: lr_sd_section(h, args, clock, ar_wall)),
                         ("policy", lambda: policy_section(h, args, clock, ar_wall))):
            if clock.left() < args.reserve_s + 2 * ar_wall:
                result[name] = {"skipped": "time budget"}
                clock.log(f"{name}: skipped (time budget)")
                continue
            result[name] = guarded(fn, clock, name)
    else:
        for name in ("bernoulli", "traces", "lr_sd", "policy"):
            result[name] = {"skipped": "draft or target model could not be built"}
    result["serve"] = {"skipped": "not run by this script: Ray Serve on the device needs carried wheels; "
                                  "see docs/gpu.md" + ("" if not args.serve else " (--serve was given)")}
    result["timing"] = {"total_s": round(clock.elapsed(), 2)}
    return result


def guarded(fn, clock: Clock, name: str) -> dict:
    """A section's result, or its error: one failing section must not lose the others."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        clock.log(f"{name}: failed: {exc!r}")
        return {"error": repr(exc)[:1000]}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def write(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_bench-" + ("smoke-" if result["config"].get("smoke") else "") + slug(result["device"]["name"])
    path = out / f"{stem}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    paths = [path]
    try:
        paths.append(plot(result, out / f"{stem}.png"))
    except ImportError:
        result["notes"].append("matplotlib missing: draw the PNG with --plot-only on a machine that has it")
        path.write_text(json.dumps(result, indent=1) + "\n")
    return paths


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    dec = dict(sorted(((k, v) for k, v in result.get("decode", {}).items() if "ms_per_token" in v),
                      key=lambda kv: kv[1]["params"]))
    names = [v["shape"]["name"] for v in dec.values()]
    x = range(len(dec))
    ax.bar([i - 0.25 for i in x], [v["bound_ms"] for v in dec.values()], 0.25, label="bound (bytes / copy bw)")
    ax.bar(list(x), [v["ms_per_token"].get("1", 0) for v in dec.values()], 0.25, label="batch 1")
    big = max((int(b) for v in dec.values() for b in v["ms_per_token"]), default=1)
    ax.bar([i + 0.25 for i in x], [v["ms_per_token"].get(str(big), 0) for v in dec.values()], 0.25,
           label=f"batch {big}")
    ax.set_xticks(list(x), names, rotation=20, fontsize=8)
    ax.set_ylabel("ms / token")
    ax.set_yscale("log")
    ax.set_title("static decode vs bandwidth bound")
    ax.legend(fontsize=8)

    ax = axes[1]
    runs = (result.get("bernoulli") or {}).get("runs", [])
    for b in B_VALUES:
        for schedule, style in (("sync", "-o"), ("async", "--s")):
            pts = sorted((r["g"], r["speedup"]) for r in runs if r["b"] == b and r["schedule"] == schedule)
            if pts:
                line, = ax.plot(*zip(*pts), style, label=f"b={b} {schedule}")
                if schedule == "sync":
                    pred = sorted((r["g"], r["predicted"]) for r in runs
                                  if r["b"] == b and r["schedule"] == "sync" and r["predicted"])
                    if pred:
                        ax.plot(*zip(*pred), ":", color=line.get_color(), alpha=0.6)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("depth g")
    ax.set_ylabel("speedup over ar (dotted: cost model, sync)")
    ax.set_title("lr, Bernoulli-replayed acceptance")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[2]
    bars = []
    for t in (result.get("traces") or {}).get("files", []):
        for r in t.get("runs", []):
            bars.append((f"trace {t['target']}\n{r['schedule']} b={t['recorded_acceptance']:.2f}", r["speedup"],
                         r.get("predicted")))
    lsd = result.get("lr_sd") or {}
    if "sd" in lsd:
        bars.append((f"sd k={lsd['k']}", lsd["sd"]["speedup"], None))
        for r in lsd.get("lr_sd", []):
            if "speedup" in r:
                bars.append((f"lr+sd b={r['b']}", r["speedup"], None))
    for r in (result.get("policy") or {}).get("runs", []):
        if "speedup" in r:
            bars.append((f"auto b={r['b']}", r["speedup"], None))
    if bars:
        ax.bar(range(len(bars)), [b[1] for b in bars], label="realized")
        ax.scatter([i for i, b in enumerate(bars) if b[2]], [b[2] for b in bars if b[2]], color="k", marker="_",
                   s=200, label="cost model")
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=60, fontsize=7)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.legend(fontsize=8)
    ax.set_title("traces, lr+sd, adaptive depth (speedup over ar)")
    fig.suptitle(f"{result['device']['name']}: random weights, replayed acceptance", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu.gpu_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--smoke", action="store_true", help="toy shapes and short answers (CPU test of the whole path)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--sizes", default="0.5b,1.5b,7b,14b,32b", help="model sizes for the decode table")
    p.add_argument("--draft", default="0.5b")
    p.add_argument("--target", default="14b")
    p.add_argument("--capture", choices=("graph", "compile", "none"), help="default: graph on CUDA, none on CPU")
    p.add_argument("--draft-capture", choices=("graph", "compile", "none"),
                   help="the draft model's capture (default: --capture); compile fuses the small kernels")
    p.add_argument("--budget-s", type=float, help="stop starting work after this (default 560 on CUDA, 240 smoke)")
    p.add_argument("--reserve-s", type=float, default=None, help="time kept for writing results")
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
    p.add_argument("--trace-questions", type=int, help="questions replayed per trace (0 = all)")
    p.add_argument("--serve", action="store_true", help="(not implemented here; recorded as skipped)")
    p.add_argument("--plot-only", metavar="JSON", help="draw the PNG of an existing result and exit")
    args = p.parse_args(argv)
    smoke = args.smoke
    defaults = {"capture": "graph" if args.device.startswith("cuda") else "none",
                "budget_s": 240.0 if smoke else 560.0, "reserve_s": 5.0 if smoke else 20.0,
                "answers": 1 if smoke else 2, "positions": 4 if smoke else 8, "step_tokens": 8 if smoke else 32,
                "prompt_tokens": 16 if smoke else 128, "decode_tokens": 8 if smoke else 64,
                "max_len": 512 if smoke else 1024, "trace_questions": 1 if smoke else 0}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
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
    result = run(args)
    paths = write(result, Path(args.out))
    print(json.dumps({k: result.get(k) for k in ("label", "device", "ratios", "timing")}, indent=1))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
