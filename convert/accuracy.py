"""The chosen bundle's measured accuracy, as its manifest records it, and what it warns of."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from sensorcast.agent.forecast.fields import MEASURE_MAX, Table
from sensorcast.agent.forecast.manifest import Accuracy, TargetError
from sensorcast.convert.baselines import (
    MIN_WINDOWS_PER_STEP,
    Baselines,
    forecast_table,
    loses_warning,
    skill,
)
from sensorcast.convert.calibrate import Calibration
from sensorcast.convert.ranges import Checks
from sensorcast.convert.report import Candidate

__all__ = ["RESIDUAL_PROBABILITIES", "accuracy_of", "residual_quantiles", "trust_warnings"]

#: Quantiles of the residuals the manifest records: central bands of 50, 80 and 90 %.
RESIDUAL_PROBABILITIES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def _m(value: float) -> float:
    """A measure the manifest can hold: finite and at most ``MEASURE_MAX`` (a forced bundle
    may have an infinite error: NaN forecasts)."""
    return value if math.isfinite(value) and value <= MEASURE_MAX else MEASURE_MAX


def accuracy_of(chosen: Candidate, data: Calibration, checks: Checks, naive: Baselines) -> Accuracy:
    """Errors against Keras (held-out, every window, beyond the data's range, per target)
    and against what happened: the bundle's own, Keras's and the naive baselines'."""
    actual = data.evaluate_actual
    assert chosen.forecasts is not None
    own = forecast_table(chosen.forecasts, actual)
    std = np.array([t.std for t in chosen.targets.values()])
    per_target = {
        name: TargetError(
            std=_m(t.std),
            mae=_m(t.mae),
            max_abs=_m(t.max_abs),
            max_abs_all=_m(t.max_abs_all),
            out_of_range_mae=_m(t.out_of_range_mae),
            out_of_range_max_abs=_m(t.out_of_range_max_abs),
        )
        for name, t in chosen.targets.items()
    }
    found = skill(own, naive, std)
    return Accuracy(
        mae=_m(chosen.mae),
        max_abs=_m(chosen.max_abs),
        windows=len(data.evaluate),
        data=data.data,
        target_std=_m(float(np.mean(std))),
        forecast_mae=own,
        max_abs_all=_m(chosen.max_abs_all),
        out_of_range_mae=_m(chosen.out_of_range_mae),
        out_of_range_max_abs=_m(chosen.out_of_range_max_abs),
        per_target=per_target,
        keras_forecast_mae=forecast_table(checks.held_expected, actual),
        baselines=dict(naive.tables),
        season=naive.season,
        skill=None if found is None else max(found, -MEASURE_MAX),
        residual_quantiles=residual_quantiles(chosen.forecasts, actual),
    )


def residual_quantiles(forecast: np.ndarray, actual: Optional[np.ndarray]) -> dict[str, Table]:
    """Quantiles of ``actual - forecast`` per step (rows) and target (columns), target units,
    by probability (``"0.1"``...), where prediction intervals start; empty unless every step
    has :data:`MIN_WINDOWS_PER_STEP` windows with an actual."""
    if actual is None or actual.shape != forecast.shape:
        return {}
    residual = np.where(np.isfinite(forecast), actual - forecast, np.nan)
    if np.isfinite(residual).sum(axis=0).min() < MIN_WINDOWS_PER_STEP:
        return {}
    found = np.nanquantile(residual, RESIDUAL_PROBABILITIES, axis=0)  # (p, steps, targets)
    return {
        f"{p:g}": tuple(tuple(float(f"{v:.6g}") for v in row) for row in table)
        for p, table in zip(RESIDUAL_PROBABILITIES, found)
    }


def trust_warnings(accuracy: Accuracy, naive: Baselines) -> list[str]:
    """What the user must hear about the bundle's forecasts (e.g. it loses to the last value)."""
    std = np.array([t.std for t in accuracy.per_target.values()])
    loses = loses_warning(accuracy.forecast_mae, naive, std)
    return [loses] if loses else []
