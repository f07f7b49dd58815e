"""Real TensorFlow conversions of tiny models made here, checked against Keras."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.convert import cli as convert_cli
from sensorcast.convert.cli import main as convert_main

WINDOW, HORIZON = 12, 3
FEATURES = ["temp", "hum"]


@dataclass(frozen=True)
class Tiny:
    model: Path
    csv: Path
    norm: Path
    data: np.ndarray  # (rows, features) raw values


def _series(n: int) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(3)
    temp = 20 + 3 * np.sin(2 * np.pi * t / 48) + rng.normal(0, 0.2, n)
    hum = 50 + 10 * np.cos(2 * np.pi * t / 48) + rng.normal(0, 1, n)
    return np.column_stack([temp, hum])


def _build(tmp: Path, name: str, targets: int, units: int = 24) -> Tiny:
    import keras

    keras.utils.set_random_seed(0)
    data = _series(400)
    mean, std = data.mean(axis=0), data.std(axis=0)
    z = (data - mean) / std
    count = len(z) - WINDOW - HORIZON
    x = np.stack([z[i : i + WINDOW] for i in range(count)]).astype("float32")
    y = np.stack([z[i + WINDOW : i + WINDOW + HORIZON, :targets] for i in range(count)])
    layers: list[Any] = [keras.Input((WINDOW, len(FEATURES))), keras.layers.LSTM(units)]
    if targets == 1:
        layers.append(keras.layers.Dense(HORIZON))
        y = y[..., 0]
    else:
        layers += [keras.layers.Dense(HORIZON * targets), keras.layers.Reshape((HORIZON, targets))]
    model = keras.Sequential(layers)
    model.compile("adam", "mse")
    model.fit(x, y.astype("float32"), epochs=3, batch_size=32, verbose=0)
    path = tmp / f"{name}.keras"
    model.save(path)
    csv = tmp / f"{name}.csv"
    ts = 1_700_000_000 + 60 * np.arange(len(data))
    np.savetxt(
        csv,
        np.column_stack([ts, data]),
        delimiter=",",
        header="ts,temp,hum",
        comments="",
        fmt="%.4f",
    )
    norm = tmp / f"{name}.norm.json"
    norm.write_text(
        json.dumps({f: {"mean": mean[i], "std": std[i]} for i, f in enumerate(FEATURES)})
    )
    return Tiny(path, csv, norm, data)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return _build(tmp_path_factory.mktemp("tiny"), "tiny", targets=1)


@pytest.fixture(scope="module")
def tiny2(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return _build(tmp_path_factory.mktemp("tiny2"), "tiny2", targets=2)


def convert(t: Tiny, out: Path, *extra: str) -> int:
    return convert_main(
        [str(t.model), "-o", str(out), "--calibration", str(t.csv), "--norm", str(t.norm), *extra]
    )


def keras_vs_bundle(t: Tiny, bundle: Path, targets: int = 1) -> tuple[float, float]:
    """Max abs error and the targets' std, both in target units, on the last 40 windows."""
    import keras

    model = keras.models.load_model(t.model, compile=False)
    norm = json.loads(t.norm.read_text())
    mean = np.array([norm[f]["mean"] for f in FEATURES])
    std = np.array([norm[f]["std"] for f in FEATURES])
    windows = np.stack(
        [t.data[i : i + WINDOW] for i in range(len(t.data) - WINDOW - 40, len(t.data) - WINDOW)]
    )
    expected = model.predict(((windows - mean) / std).astype("float32"), verbose=0)
    expected = expected.reshape(len(windows), HORIZON, targets) * std[:targets] + mean[:targets]
    f = Forecaster(read_bundle(bundle))
    got = np.stack([f.predict(w.astype(np.float32)).copy() for w in windows])
    return float(np.abs(got - expected).max()), float(t.data[:, :targets].std())


def tensor_types(bundle: Path) -> set[str]:
    """Tensor types read from the flatbuffer itself (the interpreter hides delegated constants)."""
    return convert_cli.tensor_types(read_bundle(bundle).model)


def test_float32_matches_keras_within_1e_5(tiny: Tiny, tmp_path: Path) -> None:
    out = tmp_path / "f32.tflite"
    assert convert(tiny, out, "--quantize", "float32", "--targets", "temp") == 0
    m = read_bundle(out).manifest
    assert m.quantization == "float32" and m.period_s == 60.0  # period read from the ts column
    assert m.features == ("temp", "hum") and m.targets == ("temp",)
    err, _ = keras_vs_bundle(tiny, out)
    assert err < 1e-5
    assert m.accuracy is not None and m.accuracy.data == "calibration" and m.accuracy.max_abs < 1e-5
    assert "float16" not in tensor_types(out) and "int8" not in tensor_types(out)


@pytest.mark.parametrize(
    ("mode", "tensor_type", "bound"),
    [("float16", "float16", 0.01), ("dynamic", "int8", 0.05), ("int8", "int8", 0.15)],
)
def test_quantized_modes_really_quantize_and_stay_close(
    tiny: Tiny, tmp_path: Path, mode: str, tensor_type: str, bound: float
) -> None:
    out = tmp_path / f"{mode}.tflite"
    assert convert(tiny, out, "--quantize", mode) == 0
    assert read_bundle(out).manifest.quantization == mode
    assert tensor_type in tensor_types(out)  # the mode did something to the model
    err, std = keras_vs_bundle(tiny, out)
    assert err < bound * std, f"{mode}: max abs {err:.4g} vs targets' std {std:.4g}"


def test_a_mode_that_changes_nothing_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = _build(tmp_path, "small", targets=1, units=4)  # every weight under 1024 elements
    out = tmp_path / "small.tflite"
    assert convert(small, out, "--quantize", "dynamic") == 0
    assert "left every weight in float32" in capsys.readouterr().err
    # (besides, maybe, that so small a model loses to the last value)
    warnings = read_bundle(out).manifest.warnings
    assert len([w for w in warnings if "effectively float32" in w]) == 1


def test_int8_io_uses_int8_tensors_and_the_manifest_scale(tiny: Tiny, tmp_path: Path) -> None:
    out = tmp_path / "int8io.tflite"
    assert convert(tiny, out, "--quantize", "int8", "--int8-io") == 0
    m = read_bundle(out).manifest
    assert m.input.dtype == "int8" and m.output.dtype == "int8" and m.input.scale > 0
    err, std = keras_vs_bundle(tiny, out)
    assert err < 0.15 * std


def test_several_targets_reshaped_output(tiny2: Tiny, tmp_path: Path) -> None:
    out = tmp_path / "two.tflite"
    assert convert(tiny2, out, "--targets", "temp,hum", "--period", "60") == 0
    m = read_bundle(out).manifest
    assert m.targets == ("temp", "hum") and m.horizon == HORIZON
    err, _ = keras_vs_bundle(tiny2, out, targets=2)
    assert err < 1e-4
    # the model's own error against what happened next in the CSV, per step and target
    assert m.accuracy is not None
    skill = np.array(m.accuracy.forecast_mae)
    assert skill.shape == (HORIZON, 2) and np.isfinite(skill).all() and (skill > 0).all()


def test_without_calibration_float_modes_check_on_synthetic_windows(
    tiny: Tiny, tmp_path: Path
) -> None:
    out = tmp_path / "syn.tflite"
    code = convert_main(
        [str(tiny.model), "-o", str(out), "--features", "temp,hum", "--period", "60"]
    )
    assert code == 0
    acc = read_bundle(out).manifest.accuracy
    assert acc is not None and acc.data == "synthetic" and acc.windows > 0
    assert acc.forecast_mae == ()  # no data, no claim about the forecasts' error


def test_converter_crash_becomes_a_clear_error(
    tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The worker really segfaults (test hook in sensorcast.convert._worker); the parent
    # must survive.
    monkeypatch.setenv("SENSORCAST_TEST_CRASH_CONVERTER", "int8")
    out = tmp_path / "crash.tflite"
    assert convert(tiny, out, "--quantize", "int8") == 1
    err = capsys.readouterr().err
    assert "converter crashed (SIGSEGV) converting to int8" in err
    assert not out.exists()


def test_a_silent_hanging_converter_is_stopped_at_the_timeout(
    tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sensorcast.convert import quantize

    monkeypatch.setattr(quantize, "CONVERT_TIMEOUT_S", 3.0)
    monkeypatch.setenv("SENSORCAST_TEST_HANG_CONVERTER", "float32")  # sleeps, prints nothing
    started = time.monotonic()
    assert convert(tiny, tmp_path / "hang.tflite", "--quantize", "float32") == 1
    assert time.monotonic() - started < 30
    assert "took longer than 3 s and was stopped" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--quantize", "int8", "--features", "temp,hum", "--period", "60"],
            "int8 needs calibration",
        ),
        (["--features", "temp,pressure"], "no column pressure"),
        (["--features", "temp"], "names 1 features but the model's input has 2"),
        (["--quantize", "float32", "--int8-io"], "--int8-io only applies"),
    ],
)
def test_user_mistakes_get_one_clear_line(
    tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "x.tflite"
    calib = [] if "int8 needs" in message else ["--calibration", str(tiny.csv)]
    assert convert_main([str(tiny.model), "-o", str(out), *calib, *args]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_models_that_are_not_window_forecasters_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras

    flat = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    path = tmp_path / "flat.keras"
    flat.save(path)
    assert convert_main([str(path), "-o", str(tmp_path / "o.tflite"), "--features", "a"]) == 1
    assert "is not (batch, window, features)" in capsys.readouterr().err
    assert convert_main([str(tmp_path / "none.keras"), "-o", str(tmp_path / "o.tflite")]) == 1
    assert "file not found" in capsys.readouterr().err
