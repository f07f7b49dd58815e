"""Forecast quality: residuals land on the right step, the rolling MAE, and drift."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_skill_against_the_naive_baselines_on_the_same_actuals() -> None:
    from sensorcast.agent.telemetry.naive import Baselines

    horizon, season = 3, 2
    q = QualityTracker(
        horizon=horizon, target_index=[0], min_samples=3,
        baselines=Baselines(horizon, [0], season=season),
    )  # fmt: skip
    rng = np.random.default_rng(7)
    series = 20 + np.cumsum(rng.normal(0, 0.3, 60))
    model_err: list[list[float]] = [[] for _ in range(horizon)]
    last_err: list[list[float]] = [[] for _ in range(horizon)]
    seasonal_err: list[list[float]] = [[] for _ in range(horizon)]
    for slot in range(4, 50):
        window = np.stack([series[slot - 4 : slot + 1], np.full(5, 50.0)], axis=1)
        q.actual(slot, window[-1])
        values = series[slot + 1 : slot + 1 + horizon, None] + rng.normal(0, 0.2, (horizon, 1))
        q.forecast(slot, values, window=window)
        for k in range(horizon):
            actual = series[slot + 1 + k]
            if slot + 1 + k < 50:  # its actual arrives before the loop ends
                model_err[k].append(abs(actual - values[k, 0]))
                last_err[k].append(abs(actual - series[slot]))
                seasonal_err[k].append(abs(actual - series[slot + 1 + (k % season) - season]))
    mae = [np.mean(e) for e in model_err]
    base = {"last_value": [np.mean(e) for e in last_err],
            "seasonal": [np.mean(e) for e in seasonal_err]}  # fmt: skip
    got = q.baseline_mae_by_step()
    assert set(got) == {"last_value", "seasonal"}
    for name, want in base.items():
        np.testing.assert_allclose(got[name][:, 0], want)
        np.testing.assert_allclose(q.skill_by_step()[name][:, 0], 1 - np.divide(mae, want))
        assert q.skill()[name] == pytest.approx(1 - np.mean(mae) / np.mean(want))
    report = q.report("room", "room@x", 0.0)
    assert report["skill"]["last_value"] == round(q.skill()["last_value"] or 0, 4)
    assert len(report["skill_by_step"]["seasonal"]) == horizon
    assert len(report["baseline_mae_by_step"]["last_value"]) == horizon


def test_no_skill_nor_coverage_below_min_samples() -> None:
    q = QualityTracker(horizon=2, target_index=[0], min_samples=5)
    for slot in range(4):  # three residuals of step 0, two of step 1
        q.actual(slot, _row(20.0 + slot))
        q.forecast(slot, np.array([[20.0], [20.0]]), window=np.array([_row(20.0 + slot)]))
    assert q.skill() == {"last_value": None}
    assert np.isnan(q.skill_by_step()["last_value"]).all()
    assert np.isnan(q.coverage()).all() and q.coverage_mean() is None
    report = q.report("room", "room@x", 0.0)
    assert report["coverage"] is None and report["skill"] == {"last_value": None}
    assert report["level"] == 0.8 and report["coverage_by_step"] == [[None], [None]]


def test_coverage_counts_actuals_inside_the_band_published_with_their_forecast() -> None:
    prior = np.zeros((1000, 1, 1))
    prior[:500], prior[500:] = -1.0, 1.0  # the band: values - 1 .. values + 1
    q = QualityTracker(horizon=1, target_index=[0], min_samples=4, prior=prior)
    q.interval.gamma = 0.0
    band = q.band(np.array([[20.0]]))
    assert band is not None and band[0][0, 0] == -1 + 20 and band[1][0, 0] == 1 + 20
    for slot, actual in enumerate([20.5, 21.5, 19.2, 18.0, 20.0, 20.9]):
        q.forecast(slot, np.array([[20.0]]))  # each with the band 19 .. 21
        q.actual(slot + 1, _row(actual))
    assert q.coverage()[0, 0] == pytest.approx(4 / 6)
    assert q.coverage_mean() == pytest.approx(4 / 6)


def test_rollout_and_several_targets_get_bands_shaped_like_their_values() -> None:
    from sensorcast.agent.forecast.manifest import Accuracy
    from sensorcast.agent.telemetry.intervals import prior_quantiles

    one_step: dict[str, tuple[tuple[float, ...], ...]] = {
        "0.1": ((-0.5, -2.0),),
        "0.5": ((0.0, 0.0),),
        "0.9": ((0.5, 2.0),),
    }
    acc = Accuracy(0.0, 0.0, 0, "calibration", residual_quantiles=one_step)
    q = QualityTracker(horizon=4, target_index=[0, 1], prior=prior_quantiles(acc, 4, 2))
    values = np.array([[20.0, 50.0]] * 4)
    band = q.band(values)
    assert band is not None and band[0].shape == band[1].shape == values.shape
    assert (band[0] < values).all() and (values < band[1]).all()
    width = band[1] - band[0]
    np.testing.assert_allclose(width[0], [1.0, 4.0], rtol=1e-3)  # step 0: the 10-90 % spread
    np.testing.assert_allclose(width[3], [2.0, 8.0], rtol=1e-3)  # step 3: x sqrt(4)


def test_the_payload_has_the_contract_keys_and_null_bounds_while_no_band_is_known() -> None:
    import json

    from sensorcast.agent.publish.payload import ForecastPublisher

    class Box:
        def put(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int:
            self.sent = (topic, json.loads(payload), retain)
            return 1

    box = Box()
    pub = ForecastPublisher(box, "pi", "room", "sc", 1, ("temperature",), 300.0)  # type: ignore[arg-type]
    values = np.array([[20.0], [21.0]])
    pub.publish("room@x", 600.0, values, level=0.9)
    message = box.sent[1]
    assert list(message)[-4:] == ["values", "level", "lower", "upper"]
    assert list(message)[4:7] == ["out_of_range", "fallback", "seq"]
    assert message["level"] == 0.9 and message["lower"] is None and message["upper"] is None
    band = (values - 1.0, values + 0.5)
    pub.publish("room@x", 900.0, values, fallback="last_value", band=band)
    message = box.sent[1]
    assert message["fallback"] == "last_value" and message["level"] == 0.8
    assert message["lower"] == [[19.0], [20.0]] and message["upper"] == [[20.5], [21.5]]
    pub.publish_anomaly("room@x", {"anomaly": True, "stream": "room"})
    assert box.sent == (
        "sc/pi/room/anomaly",
        {"anomaly": True, "stream": "room", "model": "room@x"},
        True,
    )
