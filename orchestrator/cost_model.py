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


def steps_per_run(b_by_depth: Sequence[float], horizon: int = 32) -> float:
    """Expected steps the asynchronous window emits between two rejections: the run of accepted
    drafts plus the target's step at the first rejection,

        E_run = 1 + b_0 + b_0 b_1 + ...,

    with no depth limit (the window slides as drafts are accepted); depths past the list reuse its
    last value, and the sum stops at `horizon` steps (an answer is finite)."""
    total, reach = 1.0, 1.0
    for d in range(horizon - 1):
        b = b_by_depth[min(d, len(b_by_depth) - 1)] if b_by_depth else 0.0
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"acceptance must be in [0, 1], got {b}")
        reach *= b
        if reach < 1e-9:
            break
        total += reach
    return total


def _ratio_at(r_by_rows: Sequence[float], n: float) -> float:
    """r(n) for a fractional n, linear between the listed sizes (r_by_rows[i] = r(i + 1))."""
    n = max(1.0, min(n, float(len(r_by_rows))))
    i = int(n)
    if i >= len(r_by_rows):
        return r_by_rows[-1]
    return r_by_rows[i - 1] + (n - i) * (r_by_rows[i] - r_by_rows[i - 1])


def window_load(g: int, c: float, r_by_rows: Sequence[float], v: float = 0.0) -> tuple[float, float, float]:
    """(rows in flight, r at that load, cadence tau) of the asynchronous window at depth g, in
    target-step times, in steady state with every draft accepted.

    A draft starts when its parent draft is done and the root is fewer than g steps behind; a
    target step starts when the draft it extends is done and takes r(n), n the target rows in
    flight. Either the drafter is the bottleneck (one step per c) or the window is (g + 1
    positions per target step plus the draft that opened it), so accepted steps come every

        tau = max(c, v, (r + c) / (g + 1)),

    and a step lasting r started every tau keeps n = r / tau rows in flight (at most g + 1): a
    fixed point, found by iterating from n = g + 1.
    """
    n = float(g + 1)
    for _ in range(20):
        r = _ratio_at(r_by_rows, n)
        tau = max(c, v, (r + c) / (g + 1))
        n_next = min(float(g + 1), max(1.0, r / tau))
        if abs(n_next - n) < 1e-3:
            break
        n = n_next
    r = _ratio_at(r_by_rows, n)
    return n, r, max(c, v, (r + c) / (g + 1))


def async_speedup(b_by_depth: Sequence[float], g: int, c: float, r_by_rows: Sequence[float], v: float = 0.0,
                  horizon: int = 32) -> float:
    """Speedup over plain target decoding of the asynchronous window at depth g (g = 0: exactly 1).

    Drafting overlaps the target. After a rejection the window restarts from the target's step:
    the first emitted step takes one target step under the window's load (window_load) and one
    verification, each further accepted step one cadence tau, so a run of E_run steps
    (steps_per_run) costs

        r + v + tau (E_run - 1)    target-step times.

    `r_by_rows[n - 1]` is r(n), the cost of a target step with n rows in flight.
    """
    if g == 0:
        return 1.0
    e = steps_per_run(b_by_depth, horizon)
    _, r, tau = window_load(g, c, r_by_rows, v)
    return e / (r + v + tau * (e - 1.0))
