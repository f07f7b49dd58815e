"""Forecast quality: residuals land on the right step, the rolling MAE, and drift."""

from __future__ import annotations

import numpy as np

from agent.quality import QualityTracker


def _row(temperature: float) -> np.ndarray:
    return np.array([temperature, 50.0])  # features: temperature, humidity


def test_residuals_land_on_the_step_they_forecast() -> None:
    q = QualityTracker(horizon=3, target_index=[0], promised=((0.1,), (0.2,), (0.3,)))
    # at slot 10 the model says 21, 22, 23 for slots 11, 12, 13
    q.actual(10, _row(20.0))
    q.forecast(10, np.array([[21.0], [22.0], [23.0]]))
    q.actual(11, _row(21.5))  # step 0 off by 0.5
    q.forecast(11, np.array([[22.0], [23.0], [24.0]]))
    q.actual(12, _row(21.0))  # step 1 of the first (22 -> 1.0), step 0 of the second (1.0)
    mae = q.mae()
    assert mae.shape == (3, 1)
    assert mae[0, 0] == 0.75 and mae[1, 0] == 1.0 and np.isnan(mae[2, 0])
    assert q.residuals == 3
    report = q.report("room", "room@x", 0.0)
    assert report["samples_by_step"] == [2, 1, 0]
    assert report["mae_by_step"] == [[0.75], [1.0], [None]]
    assert report["ratio"] is None  # fewer than min_samples on every step


def test_a_forgotten_forecast_is_dropped_and_non_finite_actuals_ignored() -> None:
    q = QualityTracker(horizon=2, target_index=[0])
    q.forecast(1, np.array([[1.0], [1.0]]))
    q.actual(2, _row(float("nan")))  # a gap: nothing learnt
    assert q.residuals == 0
    q.actual(5, _row(1.0))  # too late for any step of the forecast at slot 1
    assert q.residuals == 0


def test_drift_after_the_error_stays_high_long_enough() -> None:
    q = QualityTracker(
        horizon=1, target_index=[0], promised=((0.1,),), min_samples=5,
        drift_factor=2.0, drift_after_s=100.0,
    )  # fmt: skip
    t = 0.0
    for slot in range(30):  # a model now off by 0.5 every time: 5x its promise
        q.actual(slot, _row(20.5))
        q.forecast(slot, np.array([[20.0]]))
        change = q.update_drift(t)
        if t < 100 + 5 * 10:
            assert change is None or t >= 100
        t += 10.0
    assert q.drifting and q.ratio() == 5.0
    for slot in range(30, 300):  # back to perfect: the rolling MAE falls, drift ends
        q.actual(slot, _row(20.0))
        q.forecast(slot, np.array([[20.0]]))
        if q.update_drift(t) == "end":
            break
        t += 10.0
    assert not q.drifting
