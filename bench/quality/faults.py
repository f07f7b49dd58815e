"""Faults injected into a clean series: where, and what the sensor then reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["KINDS", "Fault", "inject", "starts"]

KINDS = ("step", "stuck", "dropout")


@dataclass(frozen=True)
class Fault:
    """A fault of ``kind`` on the target column from row ``start`` for ``periods`` rows."""

    kind: str  #: ``step`` (+``size`` target units), ``stuck`` (repeats), ``dropout`` (silent)
    start: int
    periods: int
    size: float = 0.0


def starts(n: int, count: int, warmup: int, periods: int) -> list[int]:
    """``count`` fault start rows spread evenly after ``warmup`` rows, each followed by at
    least ``periods`` clean rows before the next (the model and band recover between)."""
    span = n - warmup - 2 * periods
    gap = span // count
    if gap < 3 * periods:
        raise ValueError(f"{n} rows hold fewer than {count} faults of {periods} periods")
    return [warmup + i * gap + gap // 2 for i in range(count)]


def inject(values: np.ndarray, target: int, faults: list[Fault]) -> np.ndarray:
    """A copy of ``values`` (rows, features) with the faults in; NaN: no reading at all
    (a dropout silences the whole sensor, every feature)."""
    out: np.ndarray = values.copy()
    for f in faults:
        rows = slice(f.start, f.start + f.periods)
        if f.kind == "step":
            out[rows, target] += f.size
        elif f.kind == "stuck":
            out[rows, target] = out[f.start - 1, target]  # the last good value, repeated
        elif f.kind == "dropout":
            out[rows, :] = np.nan
        else:
            raise ValueError(f"fault kind {f.kind!r}: one of {', '.join(KINDS)}")
    return out
