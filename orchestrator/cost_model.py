"""The synchronous Lookahead Reasoning cost model: expected steps per cycle and predicted speedup.

One sync cycle at depth g drafts g steps (each costing c target-step times), runs one target
call of g + 1 rows (costing r(g + 1) target-step times, r(1) = 1) and emits the accepted
drafts plus one target step. With acceptance b_d at depth d (conditional on every shallower
draft having been accepted), the expected number of emitted steps is

    E = 1 + b_0 + b_0 b_1 + ... + b_0 ... b_(g-1),

which for i.i.d. acceptance b is (1 - b^(g+1)) / (1 - b). Plain target decoding emits one step
per target-step time, so the speedup is E / (g*c + r(g+1) + v), v being the verification
cost per cycle (zero in the paper's formula). The adaptive depth policy and the benchmarks
share these formulas.
"""
from __future__ import annotations

from typing import Sequence


def steps_per_cycle(b: float, g: int) -> float:
    """E = (1 - b^(g+1)) / (1 - b): expected steps one sync cycle emits (g + 1 at b = 1)."""
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"acceptance must be in [0, 1], got {b}")
    if b == 1.0:
        return float(g + 1)
    return (1.0 - b ** (g + 1)) / (1.0 - b)


def steps_per_cycle_by_depth(b_by_depth: Sequence[float], g: int) -> float:
    """E with a conditional acceptance per depth; depths past the list reuse its last value."""
    if g > 0 and not b_by_depth:
        raise ValueError("b_by_depth is empty")
    total, reach = 1.0, 1.0
    for d in range(g):
        b = b_by_depth[min(d, len(b_by_depth) - 1)]
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"acceptance must be in [0, 1], got {b}")
        reach *= b
        total += reach
    return total


def predicted_speedup(b: float, g: int, c: float, r: float, base_speedup: float = 1.0) -> float:
    """Sync LR speedup: base_speedup * E / (g*c + r)."""
    return base_speedup * steps_per_cycle(b, g) / (g * c + r)


def cycle_speedup(b_by_depth: Sequence[float], g: int, c: float, r: float, v: float = 0.0) -> float:
    """Speedup over plain target decoding of a sync cycle at depth g (g = 0: exactly 1).

    `r` is the cost of the g + 1 row target call in one-row target-step times, `c` a draft
    step's and `v` one verification call's, in the same unit.
    """
    if g == 0:
        return 1.0
    return steps_per_cycle_by_depth(b_by_depth, g) / (g * c + r + v)
