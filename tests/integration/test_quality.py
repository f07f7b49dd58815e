"""Forecast quality on the device through a real broker: after its forecasts' steps have
happened, the agent publishes the rolling error per step on ``.../<stream>/quality``."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Callable

import numpy as np
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.agent.forecast.runtime import load_runtime

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.mqtt import Subscriber

PERIOD = 0.2


def test_quality_reports_the_rolling_error_per_step(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    config = agent_config(
        tmp_path,
        device="q",
        port=mosquitto.port,
        prefix=topic_prefix,
        homeassistant={"enabled": False},
        streams=[stdin_stream(fast_bundle)],
    )
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/q/room/quality")
    forecasts = subscriber_factory(mosquitto.port, f"{topic_prefix}/q/room/forecast")
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:60, 1:]
    with start_agent(config) as proc:
        assert proc.stdin is not None
        proc.stdin.write("".join(json_lines(rows, 1_700_000_000, PERIOD)))
        proc.stdin.flush()
        try:
            assert sub.wait_for(lambda ms: len(ms) >= 1, 30), "no quality report"
            # The first report goes out with the first sample; stop only once every reading
            # was taken (the window ending at row 58 closes when row 59 arrives).
            assert forecasts.wait_for(lambda ms: len(ms) >= 59 - 23, 30), "forecasts missing"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert sub.wait_for(lambda ms: len(ms) >= 2, 10), "no final report at shutdown"
    report = json.loads(sub.messages[-1][1])
    assert report["stream"] == "room" and report["model"].startswith("room@")
    # Forecasts from windows ending at rows 23..59 (the last closed by the clock at shutdown,
    # or not); step k of the forecast at row r is checked against row r + 1 + k.
    samples = report["samples_by_step"]
    assert samples[0] in (59 - 23, 59 - 23 + 1) and samples == sorted(samples, reverse=True)
    assert samples[-1] == samples[0] - 11
    # The same residuals computed here, from the same bundle and readings.
    forecaster = Forecaster(read_bundle(fast_bundle), load_runtime())
    errors: list[list[float]] = [[] for _ in range(12)]
    for end in range(23, 60):
        values = forecaster.predict(rows[end - 23 : end + 1]).copy()
        for k in range(12):
            if end + 1 + k < 60 and len(errors[k]) < samples[k]:
                errors[k].append(abs(rows[end + 1 + k, 0] - values[k, 0]))
    want = [float(np.mean(e)) for e in errors]
    got = [row[0] for row in report["mae_by_step"]]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert report["promised_mae_by_step"] is None and report["ratio"] is None  # no calibration
    assert report["drift"] is False


KEYS = ["id", "device", "stream", "model", "out_of_range", "fallback", "seq", "window_end",
        "period_s", "targets", "steps", "values", "level", "lower", "upper"]  # fmt: skip


def test_forecasts_carry_a_calibrated_band_and_the_report_coverage_and_skill(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    calibrated_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    """The demo model on a month of the room's readings it was not trained on, replayed at
    its 0.2 s period: every forecast has its 80 % band, and the band holds about 80 % of
    what happened, as the report says and as the published forecasts show."""
    config = agent_config(
        tmp_path,
        device="q",
        port=mosquitto.port,
        prefix=topic_prefix,
        homeassistant={"enabled": False},
        streams=[stdin_stream(calibrated_bundle)],
    )
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/q/room/#")
    rows = np.loadtxt(demo_dir / "room-30d.csv", delimiter=",", skiprows=1)[1000:1400, 1:]
    n = len(rows)
    with start_agent(config) as proc:
        assert proc.stdin is not None
        proc.stdin.write("".join(json_lines(rows, 1_700_000_000, PERIOD)))
        proc.stdin.flush()
        try:
            done = sub.wait_for(lambda _: len(sub.payloads("/forecast")) >= n - 24, 60)
            assert done, f"{len(sub.payloads('/forecast'))} forecasts"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert sub.wait_for(lambda _: len(sub.payloads("/quality")) >= 1, 10), "no quality report"
    forecasts = [json.loads(p) for p in sub.payloads("/forecast")]
    start = 1_700_000_000
    inside: list[list[bool]] = [[] for _ in range(12)]
    for f in forecasts:
        assert list(f) == KEYS and f["level"] == 0.8 and f["fallback"] is None
        values, lower, upper = (np.array(f[k]) for k in ("values", "lower", "upper"))
        assert lower.shape == values.shape == upper.shape == (12, 1)  # from the first one
        assert (lower <= values).all() and (values <= upper).all()
        end = round((f["window_end"] - start) / PERIOD)
        for k in range(12):
            if end + 1 + k < n:
                inside[k].append(bool(lower[k, 0] <= rows[end + 1 + k, 0] <= upper[k, 0]))
    report = json.loads(sub.payloads("/quality")[-1])
    assert report["level"] == 0.8
    assert 0.7 <= report["coverage"] <= 0.9, report["coverage_by_step"]
    # The report's rolling coverage is the share of the published bands that held.
    samples = report["samples_by_step"]
    want = [np.mean(flags[-samples[k] :]) for k, flags in enumerate(inside)]
    got = [row[0] for row in report["coverage_by_step"]]
    np.testing.assert_allclose(got, want, atol=0.011)
    assert report["skill"]["last_value"] > 0.0  # the model beats carrying the last value on
    assert len(report["skill_by_step"]["last_value"]) == 12
    assert all(v[0] > 0 for v in report["baseline_mae_by_step"]["last_value"])
