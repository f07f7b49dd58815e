"""The chosen bundle's measured accuracy, as its manifest records it, and what it warns of."""

from __future__ import annotations

import math

import numpy as np
from sensorcast.agent.forecast.fields import MEASURE_MAX
from sensorcast.agent.forecast.manifest import Accuracy, TargetError
from sensorcast.convert.baselines import Baselines, forecast_table, loses_warning, skill
from sensorcast.convert.calibrate import Calibration
from sensorcast.convert.ranges import Checks
from sensorcast.convert.report import Candidate

__all__ = ["accuracy_of", "trust_warnings"]


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
    )


def trust_warnings(accuracy: Accuracy, naive: Baselines) -> list[str]:
    """What the user must hear about the bundle's forecasts (e.g. it loses to the last value)."""
    std = np.array([t.std for t in accuracy.per_target.values()])
    loses = loses_warning(accuracy.forecast_mae, naive, std)
    return [loses] if loses else []
