"""Normalization the way users trained, against the real thing: fitted scikit-learn scalers
(saved with joblib and pickle, read back by ``sensorcast norm --scaler``) give exactly their
``transform``, and a Keras model trained on MinMax-scaled data (the course's workflow)
converts with that norm into a bundle that forecasts what Keras on scaled data does.

``sensorcast norm`` is called through ``sensorcast.convert.norm.main``: the ``sensorcast``
dispatcher maps the command to that function."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import Norm, read_bundle
from sensorcast.convert.norm import main as norm_main
from sensorcast.convert.norm import read_norm
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

COLUMNS = ["temp", "hum"]


def _train_rows() -> np.ndarray:
    rng = np.random.default_rng(5)
    rows: np.ndarray = np.c_[rng.uniform(10, 90, 200), rng.normal(1013.25e2, 300, 200)]
    return rows


def _beyond(x: np.ndarray) -> np.ndarray:
    """Rows inside and well outside the training range (forecasts trend past it)."""
    lo, hi = x.min(axis=0), x.max(axis=0)
    return np.linspace(lo - (hi - lo), hi + (hi - lo), 57)


def _via_norm_command(tmp_path: Path, scaler: Any, dump: str, *args: str) -> dict[str, Norm]:
    path = tmp_path / f"scaler.{dump}"
    if dump == "joblib":
        joblib.dump(scaler, path)
    else:
        with path.open("wb") as fh:
            pickle.dump(scaler, fh)
    out = tmp_path / "norm.json"
    assert norm_main(["--scaler", str(path), *args, "-o", str(out)]) == 0
    return read_norm(out, COLUMNS)


def _assert_same_map(norm: dict[str, Norm], scaler: Any, x: np.ndarray) -> None:
    """(x - mean) / std == scaler.transform(x), and back, to float64 rounding."""
    mean = np.array([norm[c].mean for c in COLUMNS])
    std = np.array([norm[c].std for c in COLUMNS])
    z = scaler.transform(x)
    width = np.abs(z).max(axis=0)  # round-off scales with the values' size
    np.testing.assert_allclose((x - mean) / std, z, rtol=0, atol=float(width.max()) * 1e-14)
    scale = np.abs(x).max(axis=0)
    np.testing.assert_allclose(z * std + mean, scaler.inverse_transform(z), rtol=0,
                               atol=float(scale.max()) * 1e-14)  # fmt: skip


@pytest.mark.parametrize("feature_range", [(0, 1), (-1, 1)])
@pytest.mark.parametrize("dump", ["joblib", "pickle"])
def test_min_max_scaler_file_gives_exactly_its_transform(
    tmp_path: Path, feature_range: tuple[int, int], dump: str
) -> None:
    x = _train_rows()
    scaler = MinMaxScaler(feature_range=feature_range).fit(x)
    norm = _via_norm_command(tmp_path, scaler, dump, "--columns", ",".join(COLUMNS))
    _assert_same_map(norm, scaler, _beyond(x))


@pytest.mark.parametrize("feature_range", [(0, 1), (-1, 1)])
def test_min_max_json_from_the_scalers_numbers_gives_its_transform(
    tmp_path: Path, feature_range: tuple[int, int]
) -> None:
    """What a user types by hand from data_min_ / data_max_ (and feature_range)."""
    x = _train_rows()
    scaler = MinMaxScaler(feature_range=feature_range).fit(x)
    body = {
        c: {"min": scaler.data_min_[i], "max": scaler.data_max_[i]} for i, c in enumerate(COLUMNS)
    }
    if feature_range != (0, 1):
        for entry in body.values():
            entry["feature_range"] = list(feature_range)
    path = tmp_path / "norm.json"
    path.write_text(json.dumps(body))
    _assert_same_map(read_norm(path, COLUMNS), scaler, _beyond(x))


@pytest.mark.parametrize(
    ("options", "note"),
    [
        ({}, None),
        ({"with_mean": False}, "with_mean=False: the scaler does not center, so mean is 0"),
        ({"with_std": False}, "with_std=False: the scaler does not scale, so std is 1"),
    ],
)
def test_standard_scaler_file_gives_exactly_its_transform(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: dict[str, bool], note: Any
) -> None:
    x = _train_rows()
    scaler = StandardScaler(**options).fit(x)
    norm = _via_norm_command(tmp_path, scaler, "joblib", "--columns", ",".join(COLUMNS))
    _assert_same_map(norm, scaler, _beyond(x))
    printed = capsys.readouterr().out
    assert "from the StandardScaler in" in printed
    assert note is None or note in printed


def test_names_from_a_scaler_fitted_on_a_data_frame(tmp_path: Path) -> None:
    """A scaler fitted on a DataFrame keeps ``feature_names_in_``; pandas is not installed
    here, so the test sets that attribute the way fit stores it (an object array)."""
    x = _train_rows()
    scaler = MinMaxScaler().fit(x)
    scaler.feature_names_in_ = np.array(["hum", "temp"], dtype=object)  # in x's order
    norm = _via_norm_command(tmp_path, scaler, "joblib")  # no --columns needed
    in_columns_order = x[:, ::-1]  # (temp, hum)
    _assert_same_map(norm, MinMaxScaler().fit(in_columns_order), _beyond(in_columns_order))


@pytest.mark.parametrize(
    ("scaler", "args", "says"),
    [
        (RobustScaler().fit(_train_rows()), ["--columns", "temp,hum"],
         "a RobustScaler (from sklearn.preprocessing"),
        (make_pipeline(StandardScaler()).fit(_train_rows()), [],
         "save the scaler step itself (joblib.dump(pipeline.named_steps['scaler'], ...))"),
        (MinMaxScaler(), ["--columns", "temp,hum"], "the MinMaxScaler is not fitted"),
        (MinMaxScaler().fit(_train_rows()), ["--columns", "temp"],
         "fitted on 2 unnamed column(s) and got 1 --columns"),
        (MinMaxScaler().fit(_train_rows()), [], "and got no --columns"),
    ],
)  # fmt: skip
def test_what_the_scaler_route_refuses_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scaler: Any, args: list[str], says: str
) -> None:
    path = tmp_path / "scaler.pkl"
    joblib.dump(scaler, path)
    assert norm_main(["--scaler", str(path), *args, "-o", str(tmp_path / "n.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sensorcast norm: error: --scaler {path}: ") and err.count("\n") == 1
    assert says in err


def test_separate_feature_and_target_scalers_merge(tmp_path: Path) -> None:
    x = _train_rows()
    fx, fy = MinMaxScaler().fit(x[:, :1]), StandardScaler().fit(x[:, 1:])
    joblib.dump(fx, tmp_path / "x.pkl")
    joblib.dump(fy, tmp_path / "y.pkl")
    out = tmp_path / "norm.json"
    assert norm_main(["--scaler", str(tmp_path / "x.pkl"), "--scaler", str(tmp_path / "y.pkl"),
                      "--columns", "temp", "--columns", "hum", "-o", str(out)]) == 0  # fmt: skip
    norm = read_norm(out, COLUMNS)
    assert norm["temp"].std == pytest.approx(fx.data_range_[0])
    assert norm["hum"].std == pytest.approx(fy.scale_[0])
    clash = ["--scaler", str(tmp_path / "x.pkl"), "--scaler", str(tmp_path / "y.pkl"),
             "--columns", "temp", "--columns", "temp", "-o", str(out)]  # fmt: skip
    assert norm_main(clash) == 1


# ---- a real conversion: the course's workflow ------------------------------------------------

WINDOW, HORIZON = 12, 3


@pytest.mark.convert
def test_min_max_trained_model_converts_with_norm_from_its_scaler(tmp_path: Path) -> None:
    """LSTM(8, relu) on a MinMax-scaled level (the course), its scaler saved with joblib,
    ``sensorcast norm --scaler`` -> ``convert --norm``: the bundle forecasts what
    ``inverse_transform(keras(transform(window)))`` does, inside and beyond the training
    range."""
    import keras
    from sensorcast.convert.cli import main as convert_main

    t = np.arange(240)
    level = 50 + 30 * np.sin(2 * np.pi * t / 40) + 0.1 * t
    train_rows = level[: len(level) * 7 // 10, None]
    scaler = MinMaxScaler().fit(train_rows)
    z = scaler.transform(level[:, None])[:, 0]
    starts = np.arange(len(z) - WINDOW - HORIZON + 1)
    x = z[starts[:, None] + np.arange(WINDOW)][..., None].astype("float32")
    y = z[starts[:, None] + WINDOW + np.arange(HORIZON)].astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((WINDOW, 1)), keras.layers.LSTM(8, activation="relu"),
                              keras.layers.Dense(HORIZON)])  # fmt: skip
    model.compile("adam", "mse")
    model.fit(x, y, epochs=12, batch_size=32, verbose=0)
    model.save(tmp_path / "course.keras")
    joblib.dump(scaler, tmp_path / "scaler.pkl")
    csv = tmp_path / "level.csv"
    np.savetxt(csv, np.c_[1.7e9 + 60 * t, level], delimiter=",", header="ts,level", comments="",
               fmt="%.6f")  # fmt: skip

    norm = tmp_path / "norm.json"
    assert norm_main(["--scaler", str(tmp_path / "scaler.pkl"), "--columns", "level",
                      "-o", str(norm)]) == 0  # fmt: skip
    bundle = tmp_path / "course.tflite"
    assert convert_main([str(tmp_path / "course.keras"), "-o", str(bundle), "--norm", str(norm),
                         "--features", "level", "--calibration", str(csv), "--quantize",
                         "float32", "--quiet"]) == 0  # fmt: skip

    windows = np.stack([level[i : i + WINDOW] for i in range(0, len(level) - WINDOW, 7)])
    windows = np.concatenate([windows, windows + 60])  # trended past the training range
    scaled = scaler.transform(windows.reshape(-1, 1)).reshape(windows.shape)
    out = model.predict(scaled[..., None].astype("float32"), verbose=0)
    expected = scaler.inverse_transform(out.reshape(-1, 1)).reshape(out.shape)
    f = Forecaster(read_bundle(bundle))
    got = np.stack([f.predict(w[:, None].astype(np.float32))[:, 0].copy() for w in windows])
    span = float(train_rows.max() - train_rows.min())
    assert np.abs(got - expected).max() < 1e-4 * span
    # The mistake the issue describes (the data's mean/std for a MinMax-trained model) is far
    # off on the same windows: the comparison above can tell a wrong norm apart.
    mean, std = float(train_rows.mean()), float(train_rows.std())
    wrong = model.predict(((windows - mean) / std)[..., None].astype("float32"), verbose=0)
    assert np.abs(wrong * std + mean - expected).max() > 0.05 * span
