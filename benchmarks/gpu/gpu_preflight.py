"""The GPU benchmark's preflight (benchmarks/gpu/gpu_bench.py): before anything is timed, the static
decode path on this device, captured as the run captures it (CUDA graphs on CUDA), must give the
greedy tokens of full forwards, and every shape must capture on this torch."""
from __future__ import annotations

import time
from typing import Callable


def _greedy_reference(model, ids: list[int], n: int, device: str) -> list[int]:
    """n greedy tokens by full forwards over the whole context (no cache)."""
    import torch

    ctx = list(ids)
    with torch.inference_mode():
        for _ in range(n):
            ctx.append(int(model(input_ids=torch.tensor([ctx], device=device)).logits[0, -1].argmax()))
    return ctx[len(ids):]


def preflight(device: str, capture: str, lookup_k: int) -> dict:
    """The static path on this device, captured as the run captures it, against full forwards on
    a toy model: two rows of different lengths in one batch, a row continuing a cached one
    (prefix reuse), and prompt lookup. Greedy tokens must be equal in every check."""
    import torch

    from benchmarks.gpu.model_shapes import SMOKE, random_model
    from deployments.engines.rows import StepRow
    from deployments.engines.prompt_lookup import lookup_proposal
    from deployments.engines.static_decode import StaticDecoder, StopTables
    from orchestrator.types import SamplingParams

    t0 = time.perf_counter()
    model = random_model(SMOKE["0.5b"], device, torch.float32, seed=5)
    dec = StaticDecoder(model, StopTables.none(SMOKE["0.5b"].vocab), max_rows=2, max_len=128, buckets=[1, 2],
                        capture=capture)
    out = {"capture": capture, "torch": torch.__version__}
    try:
        out["captured"] = dec.warmup(lookup_k=[lookup_k])
        out["graph_captured"] = capture != "none" and len(out["captured"]) == 3  # buckets 1, 2 and the verify
        checks = {}
        rows = [StepRow([3, 4, 5, 6, 7, 8], SamplingParams(), 8, False), StepRow([9, 10], SamplingParams(), 8, False)]
        dec.run(rows)
        checks["batch_of_2"] = all(r.out == _greedy_reference(model, r.ids, 8, device) for r in rows)
        cont = StepRow(rows[0].ids + rows[0].out + [11, 12], SamplingParams(), 8, False)
        dec.run([cont])  # reuses the first row's cached prefix
        checks["prefix_reuse"] = cont.out == _greedy_reference(model, cont.ids, 8, device)
        dec.reset()
        stats = {"spec_steps": 0, "draft_tokens": 0, "accepted_tokens": 0}
        rep = StepRow([20, 21, 22, 23] * 3, SamplingParams(), 12, False)  # repeats: lookup proposes
        dec.run_lookup(rep, lookup_k, lookup_proposal, stats)
        checks["prompt_lookup"] = rep.out == _greedy_reference(model, rep.ids, 12, device)
        out["lookup_proposals"] = stats["draft_tokens"]
        out["checks"] = checks
        out["static_equals_full_forward"] = all(checks.values())
    finally:
        dec.close()
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def run_preflight(args, result: dict, log: Callable[[str], None]) -> None:
    """Preflight of each capture mode the run uses (the target's, and the draft's where it differs);
    a capture that fails sends the models that use it on uncaptured, with a note."""
    captures = {"target": args.capture}
    if args.draft_capture != args.capture:
        captures["draft"] = args.draft_capture
    pf = {}
    for role, capture in captures.items():
        try:
            pf[role] = preflight(args.device, capture, args.lookup_k)
        except Exception as exc:  # noqa: BLE001 - recorded; the run goes on uncaptured
            pf[role] = {"capture": capture, "graph_captured": False, "static_equals_full_forward": False,
                        "error": repr(exc)[:500]}
            result["notes"].append(f"capture {capture!r} failed in preflight: the models that use it run uncaptured")
            if args.capture == capture:
                args.capture = "none"
            if args.draft_capture == capture:
                args.draft_capture = "none"
        if not pf[role]["static_equals_full_forward"]:
            result["notes"].append(f"preflight FAILED ({role}, capture {capture}): static decode differs from "
                                   "full forwards on this device")
    result["preflight"] = {**pf["target"], **({"draft": pf["draft"]} if "draft" in pf else {})}
    result["capture_used"] = {"target": args.capture, "draft": args.draft_capture}
    log(f"preflight: {result['preflight']}")
