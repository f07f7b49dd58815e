"""Anomalies from forecasts (agent/telemetry/anomaly.py), on the demo's 30 real days.

The replays run the shipped demo bundle through the agent's Forecaster (no TensorFlow), a real
Window fed reading by reading, and the detector called as the pipeline calls it
(bench/anomaly/replay.py), with the band the agent publishes (its QualityTracker's, from the
bundle's residual quantiles, kept calibrated as actuals arrive).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sensorcast.agent.config import QualityConfig, StreamConfig
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.agent.telemetry.anomaly import AnomalyDetector, iso_utc
from sensorcast.agent.window import Window

from bench.anomaly.replay import Replay, detector, fault_delays, load_room, quantize
from tests.support.paths import DEMO_DIR

PERIOD = 300.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a slot boundary


@pytest.fixture(scope="module")
def replay() -> Replay:
    ts, rows = load_room()
    return Replay(ts, rows, band="agent")


@pytest.fixture(scope="module")
def fault_starts(replay: Replay) -> list[int]:
    rng = np.random.default_rng(16)
    return sorted(rng.integers(replay.calib, len(replay.rows) - 200, 8).tolist())


def test_a_clean_month_raises_about_one_anomaly_a_week(replay: Replay) -> None:
    run = replay.run(replay.rows, replay.fc, detector())
    assert len(run.starts()) <= 6, run.starts()  # measured: 3 in 30 days


def test_a_coarse_sensor_on_a_flat_room_is_rarely_called_stuck(replay: Replay) -> None:
    rows = quantize(replay.rows, 0.1)  # 19 genuine runs of 6+ equal readings in 30 days
    run = replay.run(rows, replay.forecasts(rows), detector())
    assert len(run.starts()) <= 6, run.starts()  # measured: 2 (1 stuck)


@pytest.mark.parametrize(
    ("kind", "most"), [("step", 1), ("stuck", 8), ("dropout", 2), ("silence", 2)]
)
def test_injected_faults_are_raised_promptly(
    replay: Replay, fault_starts: list[int], kind: str, most: int
) -> None:
    """Delay in periods after the fault's first period closed (step: 3 x the target's std;
    stuck: a run the sensor's own repeat rate makes rarer than RUN_P, 7-8 equal readings
    here; dropout (of the target, or of every feature: no period
    closes): the 2nd period without one)."""
    delays = fault_delays(replay, kind, fault_starts)
    assert all(d is not None and d <= most for d in delays), delays


def test_a_step_is_a_step_and_ends_after_the_fault(replay: Replay, fault_starts: list[int]) -> None:
    at = fault_starts[0]
    rows = replay.rows.copy()
    rows[at : at + 12, 0] += 3 * replay.target_std
    span = (at - 48, at + 12 + 96)
    run = replay.run(rows, replay.forecasts(rows, *span), detector(), None, span)
    (first, start), (last, end) = run.events[0], run.events[-1]
    assert (first, start["anomaly"], start["reason"]) == (at, True, "step")
    assert start["since"] == replay.ts[at] and start["since_iso"] == iso_utc(replay.ts[at])
    assert start["z"] > 8 and start["band"][0] < start["expected"] < start["band"][1]
    assert end["anomaly"] is False and end["reason"] == "step" and end["since"] == start["since"]
    assert at + 12 <= last <= at + 12 + 24  # the model's window holds the step a while


def _observe(det: AnomalyDetector, win: Window, slot: int, value: float, fc: float) -> Any:
    win.add(0, (slot + 1) * PERIOD + 1, value, (slot + 1) * PERIOD + 2)  # closes ``slot - 1``
    got = det.idle(win, (slot + 1) * PERIOD + 2)
    a = np.array([value])
    f = np.array([fc])
    return got + det.observe(slot, PERIOD, a, f, f - 0.128, f + 0.128)  # sigma 0.1


def test_a_genuinely_flat_signal_is_not_stuck_and_a_moving_one_is() -> None:
    det = AnomalyDetector("room", [("temperature", 0)], stuck_periods=5)
    win = Window(1, 4, PERIOD)
    base = int(T0 // PERIOD)
    for k, v in enumerate([20.0, 20.5, 20.0]):  # a sensor with a 0.5 resolution: coarse
        win.add(0, (base + k) * PERIOD + 1, v, (base + k) * PERIOD + 2)
    flat = [_observe(det, win, base + 2 + k, 20.0, 20.0 + 0.01 * k) for k in range(8)]
    assert not any(flat) and not det.active  # forecast flat: a flat room
    found = []
    for k in range(4):  # it expected a rise, each time by 1.6 sigma (inside the 99 % band)
        found += _observe(det, win, base + 10 + k, 20.5, 20.66)
    assert found == []  # 4 equal readings: not yet
    found += _observe(det, win, base + 14, 20.5, 20.66)
    assert [p["reason"] for p in found] == ["stuck"] and det.active
    assert found[0]["since"] == (base + 10) * PERIOD and found[0]["periods"] == 5
    (ended,) = _observe(det, win, base + 15, 20.7, 20.7)
    assert ended["anomaly"] is False and ended["reason"] == "stuck" and not det.open


def test_a_silent_sensor_is_a_dropout_though_no_period_closes() -> None:
    det = AnomalyDetector("room", [("temperature", 0)], dropout_periods=2)
    win = Window(1, 4, PERIOD)
    now = T0 + 3e7  # the wall clock: a year after the data's time (old data replayed)
    for k in range(3):
        win.add(0, T0 + k * PERIOD + 1, 20.0, now + k)
    assert det.idle(win, now + 3) == []
    assert det.idle(win, now + 3 + PERIOD + 3) == []  # one period late: still no dropout
    (start,) = det.idle(win, now + 3 + 2 * PERIOD + 3)
    slot = int(T0 // PERIOD)
    assert start["reason"] == "dropout" and start["since"] == (slot + 2) * PERIOD
    assert start["last_reading"] == (slot + 1) * PERIOD and start["time_iso"].endswith("Z")
    assert det.idle(win, now + 3 + 5 * PERIOD) == []  # raised once
    win.add(0, T0 + 6 * PERIOD + 1, 20.0, now + 4 + 5 * PERIOD)  # back: closes slot 2 only
    win.add(0, T0 + 7 * PERIOD + 1, 20.0, now + 5 + 5 * PERIOD)
    (end,) = det.idle(win, now + 6 + 5 * PERIOD)
    assert end["anomaly"] is False and end["reason"] == "dropout" and "ended_iso" in end


def test_the_stream_ends_only_when_its_last_anomaly_does() -> None:
    det = AnomalyDetector("room", [("temperature", 0)], dropout_periods=2, anomaly_periods=2)
    win = Window(1, 4, PERIOD)
    base = int(T0 // PERIOD)
    for k in range(3):
        win.add(0, (base + k) * PERIOD + 1, 20.0 + k * 0.01, (base + k) * PERIOD + 2)
    got = _observe(det, win, base + 2, 30.0, 20.0)  # 100 sigma: a step, at once
    assert [(p["anomaly"], p["reason"]) for p in got] == [(True, "step")]
    got = det.idle(win, (base + 6) * PERIOD)  # then silence
    assert [(p["anomaly"], p["reason"]) for p in got] == [(True, "dropout")]
    assert {p["reason"] for p in det.open} == {"step", "dropout"}
    got = _observe(det, win, base + 6, 20.0, 20.0)  # a reading: the dropout ends, not the step
    assert got == [] and [p["reason"] for p in det.open] == ["step"]
    got = _observe(det, win, base + 7, 20.05, 20.0)  # back inside: once ...
    assert got == [] and det.active
    got = _observe(det, win, base + 8, 20.05, 20.0)  # ... twice (anomaly_periods)
    assert [(p["anomaly"], p["reason"]) for p in got] == [(False, "step")] and not det.active


def test_without_a_band_the_manifest_mae_sets_the_scale() -> None:
    det = AnomalyDetector("room", [("temperature", 0)], mae=[0.08])
    a, f = np.array([20.3]), np.array([20.0])
    got = det.observe(100, PERIOD, a, f, None, None) + det.observe(101, PERIOD, a, f, None, None)
    assert [p["reason"] for p in got] == ["outside_band"]  # 0.3 / (0.08 x 1.2533) = 3 sigma
    assert got[0]["since"] == 100 * PERIOD and math.isclose(
        got[0]["sigma"], 0.08 * 1.2533, rel_tol=1e-3
    )
    assert AnomalyDetector("room", [("temperature", 0)]).observe(1, PERIOD, a, f, None, None) == []


def test_for_stream_follows_the_config_and_the_manifest() -> None:
    m = read_bundle(DEMO_DIR / "room.tflite").manifest
    sc = StreamConfig(name="room", model=DEMO_DIR / "room.tflite", level=0.9)
    det = AnomalyDetector.for_stream(QualityConfig(anomaly_level=0.999), sc, m)
    assert det is not None and det.stream == "room" and not det.active and det.open == []
    assert math.isclose(det.z_anomaly, 3.2905, rel_tol=1e-4)
    assert AnomalyDetector.for_stream(QualityConfig(anomaly=False), sc, m) is None
    assert AnomalyDetector.for_stream(QualityConfig(enabled=False), sc, m) is None


def test_iso_times_are_utc() -> None:
    assert iso_utc(T0) == "2026-01-01T00:00:00Z"
    assert iso_utc(T0 + 0.2) == "2026-01-01T00:00:00.200Z"


def test_a_new_model_takes_over_the_open_anomalies() -> None:
    old = AnomalyDetector("room", [("temperature", 0)], mae=[0.08])
    f = np.array([20.0])
    (start,) = old.observe(100, PERIOD, np.array([25.0]), f, None, None)  # 50 sigma
    new = AnomalyDetector("room", [("temperature", 0)], mae=[0.08])
    new.adopt(old)
    assert new.active and new.open == [start]
    assert new.observe(101, PERIOD, f, f, f - 0.1, f + 0.1) == []
    (end,) = new.observe(102, PERIOD, f, f, f - 0.1, f + 0.1)
    assert end["anomaly"] is False and end["since"] == start["since"] == 100 * PERIOD


def test_the_window_says_which_period_last_had_a_reading() -> None:
    win = Window(2, 4, PERIOD)
    base = int(T0 // PERIOD)
    assert win.last_reading_slot(0) is None
    win.add(0, T0 + 1, 20.0, T0 + 2)
    win.add(1, T0 + 2, 50.0, T0 + 2)
    assert win.last_reading_slot(0) is None  # its period is still open
    win.add(1, T0 + PERIOD + 1, 50.0, T0 + PERIOD + 2)  # closes the first: both read
    win.add(1, T0 + 2 * PERIOD + 1, 50.0, T0 + 2 * PERIOD + 2)  # the second: humidity only
    assert win.closed_through == base + 1 and win.view()[-1, 0] == 20.0  # carried
    assert win.last_reading_slot(0) == base and win.last_reading_slot(1) == base + 1
