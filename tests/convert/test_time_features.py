"""Calendar features for real (issue 15, section 3): the TensorFlow tutorial's kind of model,
whose inputs include ``Day sin`` and ``Day cos``, converts from a CSV that has only the
sensor column and runs on the agent, which computes them for each slot; ``sensorcast train
--time-features day`` trains such a model itself, and ``evaluate`` computes them too."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest
from sensorcast.agent.cli import main as cli
from sensorcast.agent.config import load_config
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.agent.forecast.timefeatures import time_features
from sensorcast.agent.pipeline import Pipeline
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.sources.base import Reading
from sensorcast.agent.streams import equip, load_streams

from tests.support.configs import agent_config

pytestmark = pytest.mark.convert

T0 = 1_700_000_000.0  #: Unix seconds, a whole hour.
PERIOD = 3600.0
WINDOW, HORIZON = 12, 3
FEATURES = ["T (degC)", "Day sin", "Day cos"]
COMPUTED = {"Day sin": "day_sin", "Day cos": "day_cos"}
NORM = {"T (degC)": {"mean": 10.0, "std": 5.0}, "Day sin": {"mean": 0.0, "std": 0.7},
        "Day cos": {"mean": 0.0, "std": 0.7}}  # fmt: skip


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tutorial-style LSTM(8) on ``T (degC)``, ``Day sin``, ``Day cos`` (untrained: the
    conversion and the agent are under test, not the weather), its norm, and a CSV of eight
    days with a ts column and ``T (degC)`` only."""
    import keras

    d = tmp_path_factory.mktemp("tutorial")
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((WINDOW, len(FEATURES))), keras.layers.LSTM(8),
                              keras.layers.Dense(HORIZON)])  # fmt: skip
    model.save(d / "tutorial.keras")
    (d / "norm.json").write_text(json.dumps(NORM))
    t = T0 + PERIOD * np.arange(200)
    temp = 10 + 5 * np.sin(2 * np.pi * (t / 86400 - 0.3))
    np.savetxt(d / "jena.csv", np.c_[t, temp], delimiter=",", header="ts,T (degC)",
               comments="", fmt="%.3f")  # fmt: skip
    return {"model": d / "tutorial.keras", "norm": d / "norm.json", "csv": d / "jena.csv"}


@pytest.fixture(scope="module")
def bundle(tutorial: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial model converted from the CSV that has no ``Day sin``/``Day cos`` column:
    the one conversion of this module (a conversion costs about 20 s)."""
    from sensorcast.convert.cli import main as convert_main

    out = tmp_path_factory.mktemp("bundle") / "tutorial.tflite"
    args = [str(tutorial["model"]), "-o", str(out), "--norm", str(tutorial["norm"]),
            "--features", ",".join(FEATURES), "--targets", "T (degC)", "--quantize",
            "float32", "--period", f"{PERIOD:g}", "--quiet", "--calibration",
            str(tutorial["csv"]), "--time-features", "Day sin=day_sin,Day cos=day_cos"]  # fmt: skip
    assert convert_main(args) == 0
    return out


def test_convert_marks_them_computed_and_checks_them_against_keras(bundle: Path) -> None:
    m = read_bundle(bundle).manifest
    assert m.computed == COMPUTED and m.sensor_features == ("T (degC)",)
    assert m.features == tuple(FEATURES)
    # checked against Keras on windows whose Day sin/cos came from the ts column
    assert m.accuracy is not None and m.accuracy.max_abs_all < 1e-3


def test_agent_computes_them_for_each_slot_and_forecasts_as_keras(
    tutorial: dict[str, Path], bundle: Path, tmp_path: Path
) -> None:
    import keras

    stream = {"name": "jena", "model": bundle,
              "inputs": {"T (degC)": {"type": "mqtt_value", "topic": "jena/t"}}}  # fmt: skip
    cfg = load_config(agent_config(tmp_path, device="pi", port=1883, streams=[stream]))
    (s,) = streams = load_streams(cfg)  # no input for Day sin / Day cos
    outbox = Outbox(tmp_path / "outbox.db")
    equip(s, cfg, outbox)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    predict = s.predict

    def spy(window: np.ndarray) -> np.ndarray:
        y = predict(window)
        seen.append((window.copy(), y.copy()))
        return y

    s.predict = spy
    failures: list[Exception] = []
    pipeline = Pipeline(streams, lambda _s, exc, _what: failures.append(exc))
    first = math.floor((T0 + 5 * 3600) / PERIOD)
    temps = 10 + 4 * np.cos(np.arange(WINDOW + 2) / 3)
    for i, value in enumerate(temps):  # T (degC) only, a minute into each hour
        ts = (first + i) * PERIOD + 60.0
        pipeline.ingest([Reading(0, 0, ts, float(value))], ts)
        pipeline.forecast_due()
    assert not failures and s.forecasts == 2
    window, forecast = seen[-1]
    slots = (first + 1 + np.arange(WINDOW)) * PERIOD  # the newest window: slots 1..12
    np.testing.assert_allclose(window[:, 0], temps[1 : WINDOW + 1], atol=1e-5)
    np.testing.assert_allclose(window[:, 1], time_features("day_sin", slots), atol=1e-6)
    np.testing.assert_allclose(window[:, 2], time_features("day_cos", slots), atol=1e-6)
    mean = np.array([NORM[f]["mean"] for f in FEATURES])
    std = np.array([NORM[f]["std"] for f in FEATURES])
    model = keras.models.load_model(tutorial["model"])
    x = ((window - mean) / std)[None].astype(np.float32)
    expected = model.predict(x, verbose=0)[0] * 5.0 + 10.0
    np.testing.assert_allclose(forecast[:, 0], expected, atol=1e-3)
    outbox.close()


def test_evaluate_computes_them_for_keras_and_for_the_bundle(
    tutorial: dict[str, Path], bundle: Path, tmp_path: Path
) -> None:
    k_report, b_report = tmp_path / "keras.json", tmp_path / "bundle.json"
    assert cli(["evaluate", str(tutorial["model"]), str(tutorial["csv"]), "--features",
                ",".join(FEATURES), "--time-features", "Day sin=day_sin,Day cos=day_cos",
                "--norm", str(tutorial["norm"]), "--report", str(k_report)]) == 0  # fmt: skip
    assert cli(["evaluate", str(bundle), str(tutorial["csv"]), "--report", str(b_report)]) == 0
    k, b = json.loads(k_report.read_text()), json.loads(b_report.read_text())
    assert k["forecasts"] == b["forecasts"] > 0
    assert b["results"]["model"]["mae"] == pytest.approx(k["results"]["model"]["mae"], rel=1e-4)


def test_train_time_features_then_evaluate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "room.csv"
    t = T0 + 1800.0 * np.arange(400)
    temp = 19 + 2 * np.sin(2 * np.pi * t / 86400) + np.random.default_rng(1).normal(0, 0.05, 400)
    np.savetxt(csv, np.c_[t, temp], delimiter=",", header="ts,temperature", comments="",
               fmt="%.4f")  # fmt: skip
    model = tmp_path / "room.keras"
    assert cli(["train", str(csv), "--features", "temperature", "--time-features", "day",
                "--window", "12", "--horizon", "2", "-o", str(model), "--epochs", "3",
                "--units", "8", "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    next_line = out.splitlines()[-1]
    assert "--features temperature,day_sin,day_cos" in next_line
    assert next_line.endswith("--time-features day_sin=day_sin,day_cos=day_cos")
    norm = json.loads((tmp_path / "room.norm.json").read_text())
    assert norm["day_sin"] == {"mean": 0.0, "std": 1.0} == norm["day_cos"]
    import keras

    assert keras.models.load_model(model).input_shape == (None, 12, 3)

    report = tmp_path / "keras.json"
    assert cli(["evaluate", str(model), str(csv), "--features", "temperature",
                "--time-features", "day", "--report", str(report)]) == 0  # fmt: skip
    k = json.loads(report.read_text())
    assert k["forecasts"] > 30 and k["results"]["model"]["mae"] > 0
    # the calendar inputs matter: without them the model is not the one trained
    assert cli(["evaluate", str(model), str(csv), "--features", "temperature"]) != 0
    # the printed convert command is one convert takes (the conversion itself: above)
    from sensorcast.convert.calibrate import parse_time_features
    from sensorcast.convert.cli import _parser

    argv = shlex.split(next_line.removeprefix("next: sensorcast convert "))
    args, unknown = _parser().parse_known_args(argv)
    assert not unknown and args.features == "temperature,day_sin,day_cos"
    assert parse_time_features(args.time_features) == {"day_sin": "day_sin", "day_cos": "day_cos"}
