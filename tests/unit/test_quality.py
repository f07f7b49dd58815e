"""Forecast quality: residuals land on the right step, the rolling MAE, and drift."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sensorcast.agent.telemetry.quality import QualityTracker


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


class _Reference:
    """The plain definition, one residual at a time: what the batched tracker must match."""

    def __init__(self, horizon: int, samples: int) -> None:
        self.horizon, self.samples = horizon, samples
        self.made: list[tuple[int, np.ndarray]] = []
        self.by_step: list[list[float]] = [[] for _ in range(horizon)]

    def forecast(self, slot: int, values: np.ndarray) -> None:
        self.made = [*self.made[-self.horizon :], (slot, values.copy())]

    def actual(self, slot: int, row: np.ndarray) -> None:
        if not np.isfinite(row[0]):
            return
        for made, values in self.made:
            step = slot - 1 - made
            if 0 <= step < self.horizon:
                self.by_step[step].append(abs(row[0] - values[step, 0]))

    def mae(self) -> list[float]:
        return [float(np.mean(r[-self.samples :])) if r else np.nan for r in self.by_step]


@given(
    horizon=st.integers(1, 6),
    samples=st.integers(1, 30),
    buffer=st.integers(1, 20),
    events=st.lists(
        st.tuples(st.integers(1, 3), st.booleans(), st.booleans(), st.floats(-5, 5)),
        min_size=1,
        max_size=120,
    ),
)
@settings(max_examples=200, deadline=None)
def test_batched_scoring_matches_the_one_at_a_time_definition(
    horizon: int, samples: int, buffer: int, events: list[tuple[int, bool, bool, float]]
) -> None:
    q = QualityTracker(horizon=horizon, target_index=[0], samples=samples, buffer=buffer)
    ref = _Reference(horizon, samples)
    rng = np.random.default_rng(len(events))
    slot = 0
    for advance, gap, skip_forecast, value in events:
        slot += advance  # windows may skip periods
        row = _row(float("nan") if gap else value)
        q.actual(slot, row)
        ref.actual(slot, row)
        if not skip_forecast:
            values = rng.normal(0, 2, (horizon, 1))
            q.forecast(slot, values)
            ref.forecast(slot, values)
        if advance == 3:  # a figure asked for mid-stream scores what has come so far
            np.testing.assert_allclose(q.mae()[:, 0], ref.mae())
    np.testing.assert_allclose(q.mae()[:, 0], ref.mae())
    assert q.residuals == sum(len(r) for r in ref.by_step)
