"""Warm-up of an engine replica: the calls its role serves, run before Serve may route to it.

Serve routes to a replica once its constructor has returned (and then health-checks it), so an
engine whose first calls pay one-off costs (kernel and allocator set-up per batch shape, vLLM's
n-gram proposer compiling, first prefix-cache blocks) would pay them on user requests. The plan
is computed from the application's config when the app is built (`plan`), carried to the replica
as plain JSON, and run by the replica's constructor (`run`):

- target: one `generate_steps` batch per size (the cycle's T(P), T(P+d1), ... rows: depth + 1),
  each row conditioned on a longer chain of steps, as a cycle's rows are; under the target-score
  verifier also its verdict batches (`choice_probs`);
- draft: a chain of `depth` calls, each the `width` sibling steps of one position;
- judge: one verdict batch (`choice_probs` through the LLM judge's own prompt) per size.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from deployments.config import AppConfig
from orchestrator.lookahead import SIBLING_SAMPLING, LookaheadParams
from orchestrator.types import Prompt, SamplingParams, Step, StepRequest, VerifyPair
from verifier.kinds import needs

log = logging.getLogger("ray.serve")

#: the warm-up's question: steps separated by blank lines, like the answers the server writes
PROMPT = {"messages": [{"role": "user", "content": "A shop sells pens at 3 dollars each. Tom buys 4 pens and "
                        "pays with a 20 dollar bill. How much change does he get? Think step by step."}]}


def sizes_up_to(largest: int) -> list[int]:
    """1, 2, 4, ... and `largest` itself: the batch shapes between one row and the largest."""
    out, n = [], 1
    while n < largest:
        out.append(n)
        n *= 2
    return out + [max(1, largest)]


def plan(cfg: AppConfig, role: str) -> dict[str, Any] | None:
    """What the `role` replica runs at start-up (plain JSON), or None when its warm-up is off."""
    rc = getattr(cfg, role)
    if rc is None or not rc.warmup.enabled:
        return None
    d = cfg.defaults
    depth = d.depth if isinstance(d.depth, int) and d.depth > 0 else LookaheadParams().max_depth
    given = rc.warmup.batch_sizes
    out: dict[str, Any] = {"role": role, "max_step_tokens": rc.warmup.max_step_tokens}
    if role == "target":
        out["step_batches"] = sorted(set(given)) if given else sizes_up_to(depth + 1)
    if role == "draft":
        out["chain"], out["width"] = depth, d.width
    # verdict batches: a judge rules for llm-judge (the configured kind, or a request's own choice);
    # under target-score the target rates
    kind = "llm-judge" if role == "judge" else cfg.verifier.kind if role == "target" else None
    if kind in ("llm-judge", "target-score") and role in needs(kind).roles:
        out["verifier"] = kind
        out["verdict_batches"] = sorted(set(given)) if given else sizes_up_to(depth * d.width)
    return out


async def _warm(engine, p: dict[str, Any]) -> dict[str, int]:
    prompt = Prompt(**PROMPT)
    n = p["max_step_tokens"]
    greedy = SamplingParams()
    counts = {"calls": 0, "step_rows": 0, "verdict_pairs": 0}

    def request(prefix: list[Step], sampling: SamplingParams, i: int) -> StepRequest:
        # the budget lets a chain of steps grow past one step
        return StepRequest(prompt, list(prefix), sampling, n, n * 64, f"warmup-{p['role']}-{i}")

    async def steps(reqs: list[StepRequest]) -> list[Step]:
        counts["calls"] += 1
        counts["step_rows"] += len(reqs)
        return await engine.generate_steps(reqs)

    chain: list[Step] = []  # a chain of the engine's own steps: the prefixes deeper rows extend
    if "chain" in p:
        for depth in range(max(1, p["chain"])):
            siblings = [greedy] + [SamplingParams(**SIBLING_SAMPLING, seed=k) for k in range(1, p["width"])]
            drafted = await steps([request(chain, s, k) for k, s in enumerate(siblings)])
            if _last(drafted[0]):
                break
            chain.append(drafted[0])
    for size in p.get("step_batches", ()):
        while len(chain) < size - 1:  # the rows of a cycle of depth size - 1: T(P), T(P+d1), ...
            step = (await steps([request(chain, greedy, 0)]))[0]
            if _last(step):
                break
            chain.append(step)
        rows = [request(chain[:min(i, len(chain))], greedy, i) for i in range(size)]
        await steps(rows)
    if "verdict_batches" in p:
        verifier = _verifier(p["verifier"], engine)
        for size in p["verdict_batches"]:
            counts["calls"] += 1
            counts["verdict_pairs"] += size
            await verifier.verify([_pair(prompt, i) for i in range(size)])
    return counts


def _last(step: Step) -> bool:
    """Nothing can follow this step (the answer ended); a cut step still extends the context."""
    return step.finished or not step.token_ids


def _verifier(kind: str, engine):
    """The verifier's own model part, without guards (they are pure Python): its prompts and choices."""
    if kind == "target-score":
        from verifier.target_score import TargetScoreVerifier

        return TargetScoreVerifier(engine)
    from verifier.judge import LLMJudgeVerifier

    return LLMJudgeVerifier(engine)


def _pair(prompt: Prompt, i: int) -> VerifyPair:
    """A draft and a target step that differ (equal text never reaches the model)."""
    def step(text: str) -> Step:
        return Step(text, [], "warmup", "delimiter")

    prefix = [step("Each pen costs 3 dollars.\n\n")] * (i % 3)
    return VerifyPair(prompt, prefix, step(f"Tom pays {4 * 3} dollars for {4} pens.\n\n"),
                      step(f"4 pens cost 4 * 3 = {12 + i % 2} dollars.\n\n"))


def run(engine, p: dict[str, Any] | None) -> dict[str, Any]:
    """Run plan `p` on `engine` to the end and return what ran; called from a replica's constructor.

    Serve runs a synchronous constructor on the replica's event loop, so the warm-up runs on a loop
    of its own in a helper thread (engines serve any caller loop: the vLLM engine has its own, the
    transformers engine's batcher follows the loop that calls it)."""
    if not p:
        return {"ran": False}
    t0 = time.monotonic()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["counts"] = asyncio.run(_warm(engine, p))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the constructor's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="engine-warmup")
    thread.start()
    thread.join()
    if "error" in result:
        raise RuntimeError(f"{p['role']} warm-up failed: {result['error']!r}") from result["error"]
    seconds = time.monotonic() - t0
    report = {"ran": True, "role": p["role"], "seconds": round(seconds, 3), "finished_at": time.time(),
              **result["counts"]}
    log.info("%s warm-up: %d calls (%d step rows, %d verdict pairs) in %.1f s", p["role"], report["calls"],
             report["step_rows"], report["verdict_pairs"], seconds)
    return report
