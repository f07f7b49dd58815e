"""Naive baselines on the held-out windows, and the bundle's skill against them.

A bundle that cannot beat repeating the last value is almost always a setup mistake (the wrong
``--norm`` first of all), not a bad model: the converter says so instead of writing it quietly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from sensorcast.agent.forecast.fields import Table
from sensorcast.convert.calibrate import MAX_WINDOWS, Calibration, read_csv

__all__ = [
    "DAY_S",
    "MIN_WINDOWS_PER_STEP",
    "Baselines",
    "default_season",
    "forecast_table",
    "loses_warning",
    "naive_baselines",
    "skill",
]

logger = logging.getLogger(__name__)

DAY_S = 86400.0
#: A per-step error needs at least this many held-out windows with an actual value.
MIN_WINDOWS_PER_STEP = 10


def forecast_table(forecast: np.ndarray, actual: Optional[np.ndarray]) -> Table:
    """MAE of ``forecast`` against what happened, per step (rows) and target (columns), target
    units; empty unless every step has :data:`MIN_WINDOWS_PER_STEP` windows with an actual."""
    if actual is None or actual.shape != forecast.shape:
        return ()
    known = np.isfinite(actual) & np.isfinite(forecast)
    if known.sum(axis=0).min() < MIN_WINDOWS_PER_STEP:
        return ()
    error = np.where(known, np.abs(np.nan_to_num(forecast) - np.nan_to_num(actual)), 0.0)
    mae = error.sum(axis=0) / known.sum(axis=0)
    return tuple(tuple(round(float(v), 6) for v in row) for row in mae)


def default_season(period_s: float) -> int:
    """One day of periods (0 when a day holds fewer than two)."""
    steps = round(DAY_S / period_s)
    return steps if steps >= 2 else 0


@dataclass(frozen=True)
class Baselines:
    """The naive forecasts' error tables (as :func:`forecast_table`), by name."""

    tables: dict[str, Table] = field(default_factory=dict)
    season: int = 0  #: Steps in a season when ``seasonal`` was measured, else 0.


def _held_out_starts(n_windows: int) -> np.ndarray:
    """The first row of each held-out window, as :func:`~sensorcast.convert.calibrate.
    load_calibration` cuts and thins them (checked against its actuals before use)."""
    split = 0 if n_windows < 10 else int(n_windows * 0.8)
    starts = np.arange(split, n_windows)
    if len(starts) > MAX_WINDOWS:
        starts = starts[np.linspace(0, len(starts) - 1, MAX_WINDOWS).round().astype(int)]
    return starts


def _series(
    csv: Path, targets: list[str], data: Calibration, window: int, horizon: int
) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The targets' rows and each held-out window's first row, if they match the held-out
    windows' actuals; else None (the baselines are then not measured)."""
    if data.evaluate_actual is None or csv.suffix == ".npy":
        return None
    columns, values, _ = read_csv(csv)
    if not all(t in columns for t in targets):
        return None
    y = values[:, [columns.index(t) for t in targets]]
    starts = _held_out_starts(len(y) - window + 1)
    padded = np.concatenate([y, np.full((horizon, y.shape[1]), np.nan)])
    future = padded[starts[:, None] + window + np.arange(horizon)[None, :]]
    if future.shape != data.evaluate_actual.shape or not np.allclose(
        future, data.evaluate_actual, equal_nan=True
    ):
        logger.info("note: naive baselines not measured (held-out windows not located in the CSV)")
        return None
    return y, starts


def naive_baselines(
    csv: Optional[Path], targets: list[str], data: Calibration, window: int, season: int
) -> Baselines:
    """Last value carried forward and, when the CSV reaches back a season before every
    held-out forecast, the value one season earlier; on the held-out windows with actuals."""
    actual = data.evaluate_actual
    if csv is None or actual is None:
        return Baselines()
    horizon = actual.shape[1]
    found = _series(csv, targets, data, window, horizon)
    if found is None:
        return Baselines()
    y, starts = found
    tables: dict[str, Table] = {}
    last = np.repeat(y[starts + window - 1][:, None, :], horizon, axis=1)
    if table := forecast_table(last, actual):
        tables["last_value"] = table
    if season >= 1:
        step = np.arange(horizon)
        lag = season * np.ceil((step + 1) / season).astype(int)  # never a value from the future
        source = starts[:, None] + window + step[None, :] - lag[None, :]
        if source.min() >= 0 and (table := forecast_table(y[source], actual)):
            tables["seasonal"] = table
    return Baselines(tables=tables, season=season if "seasonal" in tables else 0)


def _score(table: Table, target_std: np.ndarray) -> float:
    """Mean over steps and targets of MAE / the target's std: unit-free, so a target in Pa
    does not drown one in °C."""
    return float(np.mean(np.asarray(table) / target_std))


def skill(bundle: Table, baselines: Baselines, target_std: np.ndarray) -> Optional[float]:
    """``1 - bundle error / best baseline error`` (each target's MAE over its std, averaged
    over steps and targets); below 0 the bundle loses. None when not measured."""
    if not bundle or not baselines.tables:
        return None
    best = min(_score(t, target_std) for t in baselines.tables.values())
    if best <= 0:
        return None
    return round(1.0 - _score(bundle, target_std) / best, 6)


def loses_warning(bundle: Table, baselines: Baselines, target_std: np.ndarray) -> Optional[str]:
    """The warning when the bundle forecasts worse than repeating the last value, naming the
    likely causes, most likely first; None when it does not lose (or it was not measured)."""
    last = baselines.tables.get("last_value")
    if not bundle or not last:
        return None
    ours, naive = _score(bundle, target_std), _score(last, target_std)
    if ours <= naive:
        return None
    return (
        f"the bundle forecasts worse than repeating the last value (mean error "
        f"{ours:.3g} vs {naive:.3g} of the targets' std on the held-out windows); check "
        "--norm first (it must be the normalization the model was trained with: a model "
        'trained on MinMaxScaler data needs {"min": a, "max": b} entries, not the data\'s '
        "mean/std), then: an undertrained model, a wrong --features order, a wrong --period"
    )
