"""Time budget and output of the one-call GPU benchmark (benchmarks/gpu/gpu_bench.py).

A device call has a hard wall-clock limit, and a run killed at it returns nothing it had not
written. So the benchmark:

- counts time from process start (`START`, set when this module is imported);
- gives each section, when it starts, its share of the time left (`Budget.section`): its
  weight over the weights of the sections still to come, so time one section leaves unused
  goes to the next, and no section can starve the ones after it;
- starts a unit of work (one configuration, one replayed question, one model size) only if
  its estimated cost fits the section's share (`Section.fits`), and records what it skipped;
- writes the JSON after every unit (`Output.save`), so a kill loses one unit at most;
- stops itself at a hard limit or on SIGTERM (`Output.arm`): it notes why, writes the JSON and
  the PNG of what it has, and exits with status 3.

Without a budget (`budget_s=None`, the CPU smoke run) every unit fits: what a smoke run covers
does not depend on the machine's speed.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

START = time.perf_counter()
STOPPED_EXIT = 3


class Budget:
    """`budget_s` seconds from `start` (default: process start), `reserve_s` of them kept for
    writing results; `now` is injectable for tests."""

    def __init__(self, budget_s: float | None, reserve_s: float = 0.0, weights: dict[str, float] | None = None,
                 now: Callable[[], float] = time.perf_counter, start: float | None = None) -> None:
        self.budget_s, self.reserve_s, self.now = budget_s, reserve_s, now
        self.t0 = START if start is None else start
        self.weights = dict(weights or {})

    @property
    def unlimited(self) -> bool:
        return self.budget_s is None

    def elapsed(self) -> float:
        return self.now() - self.t0

    def left(self) -> float:
        """Seconds left for work (the reserve excluded)."""
        return math.inf if self.unlimited else self.budget_s - self.reserve_s - self.elapsed()

    def fits(self, est_s: float) -> bool:
        return self.left() >= est_s

    def section(self, name: str) -> "Section":
        """Start a planned section: its deadline is now + its share of the time left."""
        if self.unlimited:
            return Section(self, name, math.inf)
        names = list(self.weights)
        rest = sum(self.weights[n] for n in names[names.index(name):])
        share = max(0.0, self.left()) * self.weights[name] / rest if rest > 0 else 0.0
        return Section(self, name, self.now() + share)


class Section:
    def __init__(self, budget: Budget, name: str, deadline: float) -> None:
        self.budget, self.name, self.deadline = budget, name, deadline

    def left(self) -> float:
        return self.deadline - self.budget.now()

    def fits(self, est_s: float) -> bool:
        """Whether a unit estimated at `est_s` seconds ends inside this section's share (and the
        whole budget)."""
        return self.budget.unlimited or (self.left() >= est_s and self.budget.fits(est_s))


class Output:
    """The result file: saved after every unit, drawn at the end, and written by the stop path
    when the hard limit or SIGTERM comes first."""

    def __init__(self, result: dict, json_path: Path, draw: Callable[[dict, Path], Path],
                 log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> None:
        self.result, self.json_path, self.draw, self.log = result, json_path, draw, log
        self.png_path = json_path.with_suffix(".png")
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._sigterm = None  # the handler before arm()
        json_path.parent.mkdir(parents=True, exist_ok=True)

    def _text(self) -> str | None:
        # another thread may be adding to the result: retry a consistent snapshot
        for _ in range(5):
            try:
                return json.dumps(self.result, indent=1, default=str) + "\n"
            except RuntimeError:
                time.sleep(0.05)
        return None

    def save(self) -> Path:
        with self._lock:
            self._write()
        return self.json_path

    def _write(self) -> None:
        text = self._text()
        if text is not None:
            tmp = self.json_path.with_suffix(".json.tmp")
            tmp.write_text(text)
            os.replace(tmp, self.json_path)

    def finish(self) -> list[Path]:
        """The JSON and the PNG; a PNG that cannot be drawn is a note, not a lost run."""
        with self._lock:
            return self._finish()

    def _finish(self) -> list[Path]:
        paths = [self.json_path]
        try:
            paths.append(self.draw(self.result, self.png_path))
        except Exception as exc:  # noqa: BLE001 - matplotlib missing or a bad field: keep the JSON
            self.result.setdefault("notes", []).append(f"PNG not drawn: {exc!r}"[:300])
        self._write()
        return paths

    def arm(self, hard_limit_s: float | None) -> None:
        """Stop at `hard_limit_s` from process start, and on SIGTERM (e.g. from `timeout`)."""
        if hard_limit_s is not None:
            self._timer = threading.Timer(max(0.0, hard_limit_s - (time.perf_counter() - START)),
                                          self.stop, args=(f"hard limit of {hard_limit_s:g} s reached",))
            self._timer.daemon = True
            self._timer.start()
        if threading.current_thread() is threading.main_thread():
            self._sigterm = signal.signal(signal.SIGTERM, lambda signum, frame: self.stop("SIGTERM received"))

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._sigterm)

    def stop(self, why: str) -> None:
        """Write what there is and exit now (the decoder threads may be mid-step: no clean-up)."""
        got = self._lock.acquire(timeout=10)  # a save in progress finishes first
        try:
            self.result["stopped"] = {"why": why, "at_s": round(time.perf_counter() - START, 1)}
            self.result.setdefault("notes", []).append(f"stopped early: {why}; the sections not in this file "
                                                       f"were not run")
            paths = self._finish()
            self.log(f"STOPPED: {why}; wrote {', '.join(map(str, paths))}")
        finally:
            if got:
                self._lock.release()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(STOPPED_EXIT)
