"""Calendar features computed from time (issue 15, section 3), without TensorFlow: the
``--time-features`` parser, calibration and training data that compute them from the ts
column, and the agent filling them for every slot of a window from the slot's start, with
no input for them in the config."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sensorcast.agent.config import load_config
from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.timefeatures import TIME_KINDS, time_features
from sensorcast.agent.pipeline import Pipeline
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.sources.base import Reading
from sensorcast.agent.streams import equip, load_streams
from sensorcast.agent.window import Window
from sensorcast.convert import ConvertError
from sensorcast.convert.calibrate import load_calibration, parse_time_features, synthetic_windows
from sensorcast.convert.dataset import load_series

from tests.support.agents import run_cli
from tests.support.configs import agent_config
from tests.support.manifests import bundle_bytes, demo_manifest

T0 = 1_700_000_000.0  #: 2023-11-14T22:13:20Z, Unix seconds.


# --- the parser ------------------------------------------------------------------------


def test_time_features_map_model_names_to_kinds() -> None:
    assert parse_time_features("Day sin=day_sin, Day cos = day_cos,Year sin=year_sin") == {
        "Day sin": "day_sin",
        "Day cos": "day_cos",
        "Year sin": "year_sin",
    }
    # a bare kind names the feature after it; a bare cycle gives its sin and cos
    assert parse_time_features("week_cos,year") == {
        "week_cos": "week_cos",
        "year_sin": "year_sin",
        "year_cos": "year_cos",
    }


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("Day sin=day_tan", "'Day sin=day_tan': no kind 'day_tan'"),
        ("Day sin", "'Day sin': give NAME=KIND pairs"),
        ("=day_sin", "'=day_sin': give NAME=KIND pairs"),
        ("", "'': give NAME=KIND pairs"),
        ("a=day_sin,a=day_cos", "feature 'a' is given twice"),
        ("a=day_sin,b=day_sin", "kind day_sin is given twice"),
    ],
)
def test_a_bad_time_feature_is_named_and_the_kinds_listed(text: str, named: str) -> None:
    with pytest.raises(ConvertError) as err:
        parse_time_features(text)
    message = str(err.value)
    assert named in message and "\n" not in message
    if "twice" not in named:
        assert all(kind in message for kind in TIME_KINDS)


# --- converter data: computed from each row's time ------------------------------------------


def _csv(path: Path, *, stamps: bool = True, rows: int = 60) -> Path:
    """Hourly ``T (degC)`` rows, with a ts column unless ``stamps`` is false."""
    t = T0 + 3600.0 * np.arange(rows)
    temp = 10 + 5 * np.sin(2 * np.pi * t / 86400)
    data, header = (np.c_[t, temp], "ts,T (degC)") if stamps else (temp[:, None], "T (degC)")
    np.savetxt(path, data, delimiter=",", header=header, comments="", fmt="%.3f")
    return path


def test_calibration_computes_time_features_from_the_ts_column(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv")
    features = ["T (degC)", "Day sin", "Year cos"]
    computed = {"Day sin": "day_sin", "Year cos": "year_cos"}
    data = load_calibration(path, features, ["T (degC)"], 12, 3, computed=computed)
    stamps = T0 + 3600.0 * np.arange(60)
    # 49 windows: the last 20 % held out; window i starts at row i
    held = data.evaluate
    first = 49 - len(held)
    rows = first + np.arange(len(held))[:, None] + np.arange(12)[None, :]
    np.testing.assert_allclose(held[:, :, 1], time_features("day_sin", stamps[rows]), atol=1e-12)
    np.testing.assert_allclose(held[:, :, 2], time_features("year_cos", stamps[rows]), atol=1e-12)
    assert data.period_s == 3600.0
    with pytest.raises(ConvertError, match="no column Day sin"):  # not computed: a column
        load_calibration(path, features, ["T (degC)"], 12, 3)


def test_computed_features_without_a_time_column_name_the_fix(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv", stamps=False)
    with pytest.raises(ConvertError, match=r"Day sin\) are computed from each row's time: add "
                       r"a column ts \(Unix seconds"):  # fmt: skip
        load_calibration(path, ["T (degC)", "Day sin"], ["T (degC)"], 12,
                         computed={"Day sin": "day_sin"})  # fmt: skip


def test_synthetic_windows_step_through_time_by_the_period() -> None:
    data = synthetic_windows(8, ["x", "d"], {}, n=16, computed={"d": "day_cos"}, period_s=900)
    angle = np.arccos(np.clip(data.evaluate[:, :, 1], -1, 1))  # cos is even: sign unknown
    steps = np.abs(np.diff(angle, axis=1))
    assert np.isclose(steps, 2 * np.pi * 900 / 86400, atol=1e-6).mean() > 0.8  # but at 0, pi
    assert data.evaluate[:, :, 0].std() > 0.5  # the sensor column stays random
    with pytest.raises(ConvertError, match="--period SECONDS is required"):
        synthetic_windows(8, ["x", "d"], {}, computed={"d": "day_cos"})


def test_training_series_computes_them_and_leaves_them_unscaled(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv", rows=200)
    series = load_series(path, ["T (degC)", "day_sin"], ["T (degC)"], 15, {"day_sin": "day_sin"})
    assert series.stamps is not None
    np.testing.assert_allclose(series.x[:, 1], time_features("day_sin", series.stamps))
    norm = series.norm()
    assert (norm["day_sin"].mean, norm["day_sin"].std) == (0.0, 1.0)
    assert norm["T (degC)"].std > 1
    with pytest.raises(ConvertError, match="target day_sin is a computed time feature"):
        load_series(path, ["T (degC)", "day_sin"], ["day_sin"], 15, {"day_sin": "day_sin"})


# --- the agent's window ----------------------------------------------------------------------


def test_window_fills_computed_columns_for_each_slots_start() -> None:
    period = 600.0
    w = Window(3, 6, period, computed=[(1, "day_sin"), (2, "week_cos")])
    start = math.floor(T0 / period)
    for i in range(9):  # readings for feature 0 only, mid-slot
        w.add(0, (start + i) * period + 7.0, 20.0 + i, (start + i) * period + 8.0)
    assert w.ready and w.closed_through == start + 7
    slots = (w.closed_through - 5 + np.arange(6)) * period
    view = w.view()
    np.testing.assert_allclose(view[:, 0], 20.0 + np.arange(2, 8))
    np.testing.assert_allclose(view[:, 1], time_features("day_sin", slots), atol=1e-7)
    np.testing.assert_allclose(view[:, 2], time_features("week_cos", slots), atol=1e-7)

    # a snapshot keeps them; the rows after a restore go on from the restored slots
    again = Window(3, 6, period, computed=[(1, "day_sin"), (2, "week_cos")])
    again.restore(w.snapshot())
    again.add(0, (start + 9) * period, 1.0, (start + 9) * period)
    np.testing.assert_allclose(again.view()[:, 1], time_features("day_sin", slots + period),
                               atol=1e-7)  # fmt: skip


def test_computed_columns_never_keep_a_stale_sensor_alive() -> None:
    w = Window(2, 3, 60.0, max_gap_s=120.0, computed=[(1, "day_sin")])
    base = math.floor(T0 / 60.0) * 60.0
    for i in range(4):
        w.add(0, base + 60.0 * i, 1.0, base + 60.0 * i)
    assert w.ready
    w.add(0, base + 60.0 * 10, 1.0, base + 60.0 * 10)  # the sensor was silent 6 periods
    assert not w.ready and w.gaps == 1


def test_a_window_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="day_sin"):
        Window(2, 3, 60.0, computed=[(1, "hour_sin")])


# --- a bundle with computed features, on the agent -------------------------------------------


@pytest.fixture
def computed_bundle(tmp_path: Path) -> Path:
    """The demo model (temperature, humidity -> temperature) whose second input is marked
    computed as ``day_sin``: a real bundle file the agent reads, checks and runs."""
    data = demo_manifest()
    data["computed"] = {"humidity": "day_sin"}
    path = tmp_path / "room.tflite"
    path.write_bytes(bundle_bytes(data))
    return path


def _config(tmp_path: Path, model: Path, **inputs: Any) -> Path:
    stream = {"name": "room", "model": model, "inputs": inputs}
    return agent_config(tmp_path, device="pi", port=1883, streams=[stream])


def test_a_computed_feature_needs_no_input_and_refuses_one(
    tmp_path: Path, computed_bundle: Path, demo_dir: Path
) -> None:
    temperature = {"type": "mqtt_value", "topic": "room/t"}
    ok = _config(tmp_path, computed_bundle, temperature=temperature)
    (stream,) = load_streams(load_config(ok))
    assert stream.window.ready is False

    done = run_cli("check", "-c", str(ok))
    assert done.returncode == 0, done.stderr

    # an input for it: refused, naming it and the fix
    both = _config(tmp_path, computed_bundle, temperature=temperature,
                   humidity={"type": "mqtt_value", "topic": "room/h"})  # fmt: skip
    with pytest.raises(ModelError, match=r"inputs\.humidity: feature 'humidity' is computed "
                       r"from time \(day_sin\) by the agent; remove this input"):  # fmt: skip
        load_streams(load_config(both))

    # not computed (the demo bundle itself): the same config lacks an input
    plain = _config(tmp_path, demo_dir / "room.tflite", temperature=temperature)
    with pytest.raises(ModelError, match="no source for feature humidity"):
        load_streams(load_config(plain))


def test_rollout_with_computed_features_is_refused(tmp_path: Path, computed_bundle: Path) -> None:
    # rollout would carry the last row's computed values forward instead of the next slots'
    stream = {"name": "room", "model": computed_bundle, "input_topic": "room/all",
              "rollout_steps": 4}  # fmt: skip
    cfg = agent_config(tmp_path, device="pi", port=1883, streams=[stream])
    with pytest.raises(ModelError, match="rollout_steps cannot roll the computed time"):
        load_streams(load_config(cfg))


def test_the_agent_forecasts_with_computed_features_from_sensor_readings_only(
    tmp_path: Path, computed_bundle: Path
) -> None:
    cfg = load_config(_config(tmp_path, computed_bundle,
                              temperature={"type": "mqtt_value", "topic": "room/t"}))  # fmt: skip
    (stream,) = streams = load_streams(cfg)
    outbox = Outbox(tmp_path / "outbox.db")
    equip(stream, cfg, outbox)
    seen: list[np.ndarray] = []
    predict = stream.predict

    def spy(window: np.ndarray) -> np.ndarray:
        seen.append(window.copy())
        return predict(window)

    stream.predict = spy
    failures: list[Exception] = []
    pipeline = Pipeline(streams, lambda _s, exc, _what: failures.append(exc))
    m = stream.manifest
    first = math.floor(T0 / m.period_s)
    for i in range(m.window + 1):  # temperature only; the last reading closes the window
        ts = (first + i) * m.period_s + 1.0
        pipeline.ingest([Reading(0, 0, ts, 21.0 + 0.1 * i)], ts)
        pipeline.forecast_due()
    assert not failures
    assert stream.forecasts == 1 and len(seen) == 1
    slots = (first + np.arange(m.window)) * m.period_s
    np.testing.assert_allclose(seen[0][:, 1], time_features("day_sin", slots), atol=1e-7)
    np.testing.assert_allclose(seen[0][:, 0], 21.0 + 0.1 * np.arange(m.window), atol=1e-5)
    outbox.close()
