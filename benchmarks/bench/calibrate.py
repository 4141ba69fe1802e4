"""Start-up calibration: how long one step takes at batch 1 and at batch n, per engine.

Each engine generates the first step of the same prompt, greedy, capped at `tokens` tokens,
as n identical rows (identical rows finish together, so only the batch size differs). The
first call warms the engine up and is not timed; each size then takes the best of `reps`
rounds (the sizes interleaved within a round).
The ratio T_batch(n) / T_1 is the cost model's r (for n = g + 1); T_1 / tokens gives the
per-token times behind the run-time estimate.
"""
from __future__ import annotations

import time

from orchestrator.types import Prompt, SamplingParams, StepRequest


class Calibration:
    def __init__(self, prompt: Prompt, tokens: int = 16, reps: int = 2) -> None:
        self.prompt, self.tokens, self.reps = prompt, tokens, reps
        self.engines: dict[str, dict] = {}  # name -> {"tokens": n, "batch": {size: seconds}}
        self.seconds = 0.0  # spent calibrating

    async def _time(self, engine, batch: int) -> tuple[float, int]:
        reqs = [StepRequest(self.prompt, [], SamplingParams(), self.tokens, self.tokens, f"calib-{batch}-{i}")
                for i in range(batch)]
        t0 = time.perf_counter()
        steps = await engine.generate_steps(reqs)
        return time.perf_counter() - t0, len(steps[0].token_ids)

    async def measure(self, name: str, engine, batches: list[int]) -> dict:
        """Time `engine` (called `name`) at batch 1 and each size in `batches` (cached)."""
        t_start = time.perf_counter()
        entry = self.engines.get(name)
        if entry is None:
            await self._time(engine, 1)  # warm-up
            entry = self.engines[name] = {"tokens": 0, "batch": {}}
        sizes = [n for n in sorted({1, *batches}) if n not in entry["batch"]]
        best = {n: float("inf") for n in sizes}
        for _ in range(self.reps):  # sizes interleaved: a burst of outside load hits them alike
            for n in sizes:
                seconds, tokens = await self._time(engine, n)
                best[n] = min(best[n], seconds)
                entry["tokens"] = tokens
        entry["batch"].update(best)
        self.seconds += time.perf_counter() - t_start
        return entry

    def t1(self, name: str) -> float | None:
        entry = self.engines.get(name)
        return entry["batch"].get(1) if entry else None

    def per_token(self, name: str) -> float | None:
        entry = self.engines.get(name)
        return entry["batch"][1] / max(entry["tokens"], 1) if entry else None

    def ratio(self, name: str, batch: int) -> float | None:
        """T_batch(n) / T_1 for engine `name`, None when not measured."""
        entry = self.engines.get(name)
        if not entry or batch not in entry["batch"]:
            return None
        return entry["batch"][batch] / entry["batch"][1]

    def noisy(self, name: str) -> bool:
        """A larger batch measured faster than batch 1: outside load disturbed the timing."""
        entry = self.engines.get(name)
        return bool(entry) and any(v < 0.9 * entry["batch"][1] for v in entry["batch"].values())

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        """The timings of a bench.json's "calibration" (to_dict), for re-summarizing its records."""
        calib = cls(Prompt(messages=[]), tokens=data.get("tokens_requested", 16), reps=data.get("reps", 1))
        calib.seconds = data.get("seconds", 0.0)
        calib.engines = {name: {"tokens": e["step_tokens"], "batch": {int(k): v for k, v in e["batch_s"].items()}}
                         for name, e in (data.get("engines") or {}).items()}
        return calib

    def to_dict(self) -> dict:
        return {
            "tokens_requested": self.tokens, "reps": self.reps, "seconds": round(self.seconds, 2),
            "noisy": [name for name in self.engines if self.noisy(name)],
            "engines": {name: {"step_tokens": e["tokens"],
                               "t1_s": round(e["batch"][1], 4),
                               "per_token_s": round(e["batch"][1] / max(e["tokens"], 1), 4),
                               "batch_s": {str(k): round(v, 4) for k, v in sorted(e["batch"].items())},
                               "ratio": {str(k): round(v / e["batch"][1], 3) for k, v in sorted(e["batch"].items())}}
                        for name, e in self.engines.items()},
        }
