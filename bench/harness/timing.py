"""Timing calls: rounds of a fixed count (stages taking turns) or rounds of a time budget.

Why our own ~100 lines and not pyperf or pytest-benchmark: the comparisons here need the
stages of one comparison (before and after, agent and bare invoke) to take turns within each
round so a shared machine's drifting load hits them alike, and process CPU time next to wall
time; the children also run in the tflite-runtime venv and the QEMU chroot, where only the
standard library and numpy are installed. pyperf spawns and calibrates its own worker per
benchmark, pytest-benchmark times one function at a time in pytest: neither interleaves.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Optional

__all__ = ["Stage", "interleaved", "merge", "spread", "time_calls", "timed_rounds"]

#: A stage to time: the call, calls per round, and a setup run before each round (untimed).
Stage = tuple[Callable[[], Any], int, Optional[Callable[[], Any]]]


def spread(values: list[float]) -> dict[str, float]:
    """``median``, ``min`` and ``max`` of ``values`` (a non-empty list)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def interleaved(stages: dict[str, Stage], rounds: int) -> dict[str, dict[str, Any]]:
    """Time each stage ``n`` calls per round, the stages taking turns, after a warm-up round.

    Taking turns puts every stage under the same (shared, drifting) machine load. Per stage:
    ``us`` the median wall time per call over the rounds (µs), ``min``/``max`` of the rounds,
    ``cpu_us`` the median process CPU time per call (all threads), ``n`` the calls timed,
    and the rounds themselves (``rounds``, ``cpu_rounds``) for :func:`merge`.
    """
    wall: dict[str, list[float]] = {k: [] for k in stages}
    cpu: dict[str, list[float]] = {k: [] for k in stages}
    for r in range(rounds + 1):
        for name, (fn, n, setup) in stages.items():
            if setup is not None:
                setup()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                fn()
            t1, c1 = time.perf_counter(), time.process_time()
            if r:  # round 0 warms up
                wall[name].append((t1 - t0) / n * 1e6)
                cpu[name].append((c1 - c0) / n * 1e6)
    return {k: _summary(v, cpu[k], stages[k][1]) for k, v in wall.items()}


def _summary(wall: list[float], cpu: list[float], n: int) -> dict[str, Any]:
    s = spread(wall)
    return {
        "us": s["median"],
        "min": s["min"],
        "max": s["max"],
        "cpu_us": statistics.median(cpu),
        "n": n * len(wall),
        "rounds": wall,
        "cpu_rounds": cpu,
    }


def merge(timings: list[dict[str, Any]]) -> dict[str, Any]:
    """One :func:`interleaved` entry from several (children taking turns): all their rounds."""
    wall = [x for t in timings for x in t["rounds"]]
    cpu = [x for t in timings for x in t["cpu_rounds"]]
    return _summary(wall, cpu, timings[0]["n"] // len(timings[0]["rounds"]))


def timed_rounds(
    fn: Callable[[], Any], n: int, rounds: int, setup: Optional[Callable[[], Any]] = None
) -> dict[str, Any]:
    """:func:`interleaved` for one stage: µs per call, median and spread of the rounds."""
    return interleaved({"x": (fn, n, setup)}, rounds)["x"]


def time_calls(fn: Callable[[], Any], budget_s: float, rounds: int) -> dict[str, Any]:
    """Mean ms per call of ``fn``: warm up, then ``rounds`` rounds of >= ``budget_s`` each.

    Returns the median of the rounds' means (``ms``), the rounds (``rounds_ms``) and the
    calls made (``calls``). A round also makes at least 10 calls, so slow calls stretch it.
    """
    start, n = time.perf_counter(), 0
    while n < 5 or (time.perf_counter() - start < 0.1 and n < 2000):  # warm-up
        fn()
        n += 1
    means: list[float] = []
    calls = 0
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= budget_s and n >= 10:
                break
        means.append(1000.0 * elapsed / n)
        calls += n
    return {"ms": statistics.median(means), "rounds_ms": means, "calls": calls}
