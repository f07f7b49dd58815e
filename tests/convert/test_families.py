"""Every layer family users train, every mode, the auto choice, and refusals that name the layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.convert.cli import main as convert_main

W, F, H = 16, 3, 4


def _data(n: int = 360) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(5)
    return np.column_stack(
        [
            np.sin(2 * np.pi * t / 40) + rng.normal(0, 0.05, n),
            np.cos(2 * np.pi * t / 40) + rng.normal(0, 0.05, n),
            0.5 * np.sin(2 * np.pi * t / 13) + rng.normal(0, 0.05, n),
        ]
    )


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    data = _data()
    csv = tmp_path_factory.mktemp("data") / "series.csv"
    np.savetxt(csv, data, delimiter=",", header="a,b,c", comments="", fmt="%.5f")
    return data, csv


def _layers(name: str, data: np.ndarray) -> list[Any]:
    import keras

    layer = keras.layers
    if name == "normalization":
        norm = layer.Normalization()
        norm.adapt(data)
        return [norm, layer.LSTM(12), layer.Dense(H)]
    families: dict[str, Callable[[], list[Any]]] = {
        "lstm": lambda: [layer.LSTM(12), layer.Dense(H)],
        "lstm_relu": lambda: [layer.LSTM(12, activation="relu"), layer.Dense(H)],
        "gru": lambda: [layer.GRU(12), layer.Dense(H)],
        "simple_rnn": lambda: [layer.SimpleRNN(12), layer.Dense(H)],
        "stacked_dropout": lambda: [
            layer.LSTM(12, return_sequences=True),
            layer.Dropout(0.2),
            layer.LSTM(8),
            layer.Dense(H),
        ],
        "conv1d": lambda: [layer.Conv1D(8, 3, activation="relu"), layer.LSTM(8), layer.Dense(H)],
        "bidirectional": lambda: [layer.Bidirectional(layer.LSTM(8)), layer.Dense(H)],
        "multi_target_reshape": lambda: [layer.LSTM(12), layer.Dense(H * 2), layer.Reshape((H, 2))],
    }
    return families[name]()


def _train(name: str, data: np.ndarray, path: Path) -> Any:
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((W, F)), *_layers(name, data)])
    x = np.stack([data[i : i + W] for i in range(len(data) - W - H)]).astype("float32")
    y = np.stack([data[i + W : i + W + H] for i in range(len(data) - W - H)])
    y = y[:, :, :2] if name == "multi_target_reshape" else y[:, :, 0]
    model.compile("adam", "mse")
    model.fit(x, y.astype("float32"), epochs=2, batch_size=32, verbose=0)
    model.save(path)
    return model


FAMILIES = [
    "lstm",
    "lstm_relu",
    "gru",
    "simple_rnn",
    "stacked_dropout",
    "conv1d",
    "normalization",
    "bidirectional",
    "multi_target_reshape",
]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_converts_in_every_mode_and_auto_keeps_its_promise(
    family: str, series: tuple[np.ndarray, Path], tmp_path: Path
) -> None:
    data, csv = series
    model = _train(family, data, tmp_path / f"{family}.keras")
    out, report_path = tmp_path / "out.tflite", tmp_path / "report.json"
    targets = "a,b" if family == "multi_target_reshape" else "a"
    code = convert_main(
        [str(tmp_path / f"{family}.keras"), "-o", str(out), "--quantize", "auto", "--quiet",
         "--calibration", str(csv), "--targets", targets, "--period", "60",
         "--report", str(report_path)]
    )  # fmt: skip
    assert code == 0
    report = json.loads(report_path.read_text())
    modes = {m["mode"]: m for m in report["modes"]}
    assert set(modes) == {"float32", "float16", "dynamic", "int8"}
    for mode, row in modes.items():
        # every mode converted and stayed within its sanity bound (budget aside)
        assert row["status"] in ("ok", "over budget"), (mode, row["reason"])
        assert row["size_bytes"] > 0 and row["latency_ms"] > 0
    assert modes["float32"]["rel_max"] < 1e-4
    assert modes["float32"]["ratio_to_float32"] == 1.0

    # The chosen bundle, run by the agent, agrees with Keras as its manifest promises.
    bundle = read_bundle(out)
    m = bundle.manifest
    assert m.quantization == report["chosen"] and m.selection.startswith(report["chosen"])
    assert m.accuracy is not None and m.accuracy.mae <= report["max_error"]
    windows = np.stack([data[i : i + W] for i in range(len(data) - W - 40, len(data) - W)])
    expected = model.predict(windows.astype("float32"), verbose=0).reshape(40, H, -1)
    forecaster = Forecaster(bundle)
    got = np.stack([forecaster.predict(w.astype(np.float32)).copy() for w in windows])
    assert np.abs(got - expected).max() <= max(2 * m.accuracy.max_abs, 1e-5)


def test_auto_never_keeps_a_mode_over_max_error(
    series: tuple[np.ndarray, Path], tmp_path: Path
) -> None:
    data, csv = series
    _train("lstm", data, tmp_path / "m.keras")
    report_path = tmp_path / "r.json"
    args = [str(tmp_path / "m.keras"), "-o", str(tmp_path / "o.tflite"), "--quantize", "auto",
            "--calibration", str(csv), "--period", "60", "--quiet",
            "--report", str(report_path)]  # fmt: skip
    assert convert_main([*args, "--max-error", "1e-5"]) == 0
    report = json.loads(report_path.read_text())
    chosen = next(m for m in report["modes"] if m["mode"] == report["chosen"])
    assert chosen["mae"] <= 1e-5
    for m in report["modes"]:
        if m["status"] == "over budget":
            assert m["mae"] > 1e-5
    # A smaller bundle was passed over only because it was over budget (or a near tie).
    smaller = [m for m in report["modes"] if m["size_bytes"] < 0.9 * chosen["size_bytes"]]
    assert all(m["status"] != "ok" for m in smaller)

    # Nothing fits an impossible budget: a clear error and no file.
    out = tmp_path / "none.tflite"
    args[2] = str(out)
    assert convert_main([*args, "--max-error", "1e-12"]) == 1
    assert not out.exists()


def test_saved_model_directory_and_legacy_h5(
    series: tuple[np.ndarray, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tensorflow as tf

    data, csv = series
    model = _train("gru", data, tmp_path / "m.keras")
    model.export(str(tmp_path / "free"), verbose=False)
    spec = [tf.TensorSpec((1, W, F), tf.float32)]
    model.export(str(tmp_path / "saved"), verbose=False, input_signature=spec)
    model.save(tmp_path / "m.h5")
    # A recurrent SavedModel with a free batch cannot be lowered: the error says how to export.
    free = [str(tmp_path / "free"), "-o", str(tmp_path / "f.tflite"), "--calibration", str(csv),
            "--period", "60", "--quiet"]  # fmt: skip
    assert convert_main(free) == 1
    assert "export with a fixed batch" in capsys.readouterr().err
    for source in (tmp_path / "saved", tmp_path / "m.h5"):
        out = tmp_path / f"{source.name}.tflite"
        args = [str(source), "-o", str(out), "--calibration", str(csv), "--period", "60", "--quiet"]
        assert convert_main(args) == 0, source
        m = read_bundle(out).manifest
        assert m.window == W and m.horizon == H and m.accuracy is not None
        assert m.accuracy.max_abs < 1e-4


@pytest.mark.parametrize(
    ("build", "message"),
    [
        ("stateful", "layer 'state' (LSTM) is stateful"),
        ("lambda", "layer 'custom' (Lambda) holds Python code"),
    ],
)
def test_unsupported_layers_are_named_with_the_fix(
    build: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras

    if build == "stateful":
        model = keras.Sequential(
            [keras.Input((W, F), batch_size=1), keras.layers.LSTM(4, stateful=True, name="state"),
             keras.layers.Dense(H)]
        )  # fmt: skip
    else:
        model = keras.Sequential(
            [keras.Input((W, F)), keras.layers.Lambda(lambda x: x * 2.0, name="custom"),
             keras.layers.LSTM(4), keras.layers.Dense(H)]
        )  # fmt: skip
    path = tmp_path / "bad.keras"
    model.save(path)
    code = convert_main([str(path), "-o", str(tmp_path / "o.tflite"), "--features", "a,b,c",
                         "--period", "60"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
