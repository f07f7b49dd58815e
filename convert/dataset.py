"""A sensor CSV cut the way forecasting needs: chronological splits, windows, no leakage.

Shared by ``sensorcast train`` and ``sensorcast evaluate`` so both see the same splits:
the first 70 % of the rows train, the next 20 % validate, the last 10 % test. Windows
never cross a split's boundary, and normalization statistics come from the training rows
only (the course material's mistake is computing them on everything).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from sensorcast.agent.forecast.manifest import Norm
from sensorcast.convert import ConvertError
from sensorcast.convert.calibrate import computed_columns, read_csv

__all__ = ["Series", "load_series", "windows"]

SPLITS = (0.7, 0.2, 0.1)


@dataclass(frozen=True)
class Series:
    """Feature and target columns of a CSV, in reading units, split chronologically."""

    features: list[str]
    targets: list[str]
    x: np.ndarray  #: (rows, features)
    y: np.ndarray  #: (rows, targets)
    stamps: Optional[np.ndarray]  #: Each row's time, Unix seconds (the start of its period).
    bounds: tuple[int, int]  #: Row indices where validation and test begin.
    #: Features computed from ``stamps`` (feature -> time kind), not read from the CSV.
    computed: dict[str, str] = field(default_factory=dict)

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` rows of ``train``, ``val`` or ``test``."""
        a, b = self.bounds
        cut = {"train": slice(0, a), "val": slice(a, b), "test": slice(b, None)}[name]
        return self.x[cut], self.y[cut]

    def norm(self) -> dict[str, Norm]:
        """Mean and std of every column, from the training rows only; computed time
        features get mean 0 and std 1 (left as they are: already in [-1, 1], and a year's
        cycle seen over a few weeks of training rows has a std near 0 that would blow the
        later rows' values up far beyond anything the model trained on)."""
        x, y = self.part("train")
        out: dict[str, Norm] = {name: Norm(mean=0.0, std=1.0) for name in self.computed}
        for names, data in ((self.features, x), (self.targets, y)):
            for i, name in enumerate(names):
                if name in self.computed:
                    continue
                std = float(data[:, i].std())
                out[name] = Norm(mean=float(data[:, i].mean()), std=std if std > 0 else 1.0)
        return out

    @property
    def period_s(self) -> Optional[float]:
        if self.stamps is None or len(self.stamps) < 2:
            return None
        return float(np.median(np.diff(self.stamps)))


def load_series(
    path: Path,
    features: list[str],
    targets: list[str],
    min_rows: int,
    computed: Optional[dict[str, str]] = None,
) -> Series:
    """Read ``path``; every split needs at least ``min_rows`` rows (window + horizon).

    ``computed`` features (feature -> time kind) are computed from the ts column, as the
    agent computes them, not read from the CSV.
    """
    computed = computed or {}
    columns, values, stamps = read_csv(path)
    forecast_time = [t for t in targets if t in computed]
    if forecast_time:
        raise ConvertError(
            f"target {', '.join(forecast_time)} is a computed time feature: forecast sensor "
            "columns (--targets)"
        )
    missing = [c for c in (*features, *targets) if c not in columns and c not in computed]
    if missing:
        raise ConvertError(
            f"{path}: no column {', '.join(missing)} (it has {', '.join(columns)}); "
            "check --features and --targets"
        )
    if not np.isfinite(values).all():
        raise ConvertError(f"{path}: contains empty, NaN or infinite values; clean them first")
    n = len(values)
    a, b = n * 7 // 10, n * 9 // 10  # SPLITS, in integers (0.7 + 0.2 is not 0.9 in floats)
    if min(a, b - a, n - b) < min_rows:
        raise ConvertError(
            f"{path}: {n} rows are too few: the 70/20/10 split needs at least {min_rows} rows "
            f"(one window plus the horizon) in each part, so at least {int(min_rows / 0.1) + 1}"
        )
    x = computed_columns(str(path), features, computed, columns, values, stamps)
    y = values[:, [columns.index(t) for t in targets]]
    return Series(features, targets, x, y, stamps, (a, b), dict(computed))


def windows(
    x: np.ndarray, y: np.ndarray, window: int, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(inputs (n, window, F), next targets (n, horizon, T), each window's last row)``."""
    n = len(x) - window - horizon + 1
    if n <= 0:
        empty = np.empty((0,), dtype=np.intp)
        return np.empty((0, window, x.shape[1])), np.empty((0, horizon, y.shape[1])), empty
    starts = np.arange(n)
    inputs = x[starts[:, None] + np.arange(window)[None, :]]
    future = y[starts[:, None] + window + np.arange(horizon)[None, :]]
    return inputs, future, starts + window - 1
