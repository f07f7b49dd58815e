"""The converter's honesty, each with a real conversion of a tiny model: no silent clipping
beyond the data's range, the bundle's own error and skill against naive baselines, one rule
for the sanity bound (``--force`` the only way past), budgets per target in their own units."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.convert.cli import main as convert_main

pytestmark = pytest.mark.convert

T0, PERIOD = 1_700_000_000, 60


@dataclass(frozen=True)
class Model:
    path: Path
    csv: Path
    data: np.ndarray  #: (rows, columns) raw values, the CSV's columns after its time column


def _csv(path: Path, columns: list[str], data: np.ndarray) -> Path:
    ts = T0 + PERIOD * np.arange(len(data))
    header = ",".join(["ts", *columns])
    np.savetxt(path, np.column_stack([ts, data]), delimiter=",", header=header, comments="")
    return path


def _fit(model: Any, x: np.ndarray, y: np.ndarray, epochs: int, path: Path) -> Path:
    model.compile("adam", "mse")
    model.fit(x.astype("float32"), y.astype("float32"), epochs=epochs, batch_size=32, verbose=0)
    model.save(path)
    return path


def _windows(z: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(z) - window - horizon + 1
    x = np.stack([z[i : i + window] for i in range(n)])
    y = np.stack([z[i + window : i + window + horizon] for i in range(n)])
    return x, y


def _run(*args: Any) -> int:
    return convert_main([str(a) for a in args] + ["--quiet"])


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """The course's model: LSTM(50, relu) on 10, 20, ..., 90, three steps in, one out."""
    import keras

    keras.utils.set_random_seed(1)
    tmp = tmp_path_factory.mktemp("course")
    seq = np.arange(10.0, 100.0, 10.0)
    x, y = _windows(seq[:, None], 3, 1)
    model = keras.Sequential(
        [keras.Input((3, 1)), keras.layers.LSTM(50, activation="relu"), keras.layers.Dense(1)]
    )
    path = _fit(model, x, y[:, 0, :], 300, tmp / "course.keras")
    return Model(path, _csv(tmp / "course.csv", ["x"], seq[:, None]), seq[:, None])


def test_int8_tracks_a_trend_past_the_data_or_its_verified_range_excludes_it(
    course: Model, tmp_path: Path
) -> None:
    import keras

    out = tmp_path / "course.tflite"
    assert _run(course.path, "-o", out, "--calibration", course.csv, "--quantize", "int8") == 0
    bundle = read_bundle(out)
    m = bundle.manifest
    window = np.array([[100.0], [110.0], [120.0]], dtype=np.float32)
    keras_says = float(keras.models.load_model(course.path).predict(window[None], verbose=0)[0, 0])
    got = float(Forecaster(bundle).predict(window)[0, 0])
    low, high = m.verified_range["x"]  # every bundle says where it was verified
    assert low <= 10.0 and high >= 90.0
    std = float(course.data.std())
    # Before: 102.5 where Keras said ~139, with nothing to tell the agent.
    assert abs(got - keras_says) < 0.1 * std or high < 120.0, (got, keras_says, low, high)
    # ... and the agent marks a forecast from a window past that range.
    assert Forecaster(bundle).out_of_range(window) == (high < 120.0)
    print(f"course case: Keras {keras_says:.1f}, int8 {got:.1f}, verified {low:g}..{high:g}")
    acc = m.accuracy
    assert acc is not None and acc.out_of_range_max_abs > 0
    assert acc.per_target["x"].out_of_range_mae == acc.out_of_range_mae
    assert acc.max_abs_all >= acc.max_abs > 0


@pytest.fixture(scope="module")
def minmax(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """A relu LSTM trained the course's way, on MinMaxScaler-scaled pressure readings (Pa)."""
    import keras

    keras.utils.set_random_seed(0)
    tmp = tmp_path_factory.mktemp("minmax")
    t = np.arange(480)
    pa = 101300 + 1500 * np.sin(2 * np.pi * t / 48)
    pa += np.random.default_rng(0).normal(0, 30, len(t))
    scaled = (pa - pa.min()) / (pa.max() - pa.min())
    x, y = _windows(scaled[:, None], 12, 1)
    model = keras.Sequential(
        [keras.Input((12, 1)), keras.layers.LSTM(8, activation="relu"), keras.layers.Dense(1)]
    )
    path = _fit(model, x, y[:, 0, :], 8, tmp / "pa.keras")
    return Model(path, _csv(tmp / "pa.csv", ["pa"], pa[:, None]), pa[:, None])


def test_a_wrong_norm_is_caught_by_the_naive_baselines_and_the_bundles_own_error(
    minmax: Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pa = minmax.data[:, 0]
    wrong = tmp_path / "norm.json"  # the data's mean/std, not the min/max it was trained on
    wrong.write_text(json.dumps({"pa": {"mean": pa.mean(), "std": pa.std()}}))
    out = tmp_path / "pa.tflite"
    args = [minmax.path, "-o", out, "--calibration", minmax.csv, "--norm", wrong]
    assert _run(*args, "--quantize", "int8", "--season", "48") == 0
    err = capsys.readouterr().err
    assert "worse than repeating the last value" in err and "check --norm first" in err
    m = read_bundle(out).manifest
    assert any("check --norm first" in w for w in m.warnings)
    acc = m.accuracy
    assert acc is not None and acc.skill is not None and acc.skill < 0
    assert set(acc.baselines) == {"last_value", "seasonal"} and acc.season == 48
    # forecast_mae is the int8 bundle's own error, not Keras's (kept beside it)
    own, keras_own = np.array(acc.forecast_mae), np.array(acc.keras_forecast_mae)
    assert own.shape == keras_own.shape == (1, 1) and not np.array_equal(own, keras_own)
    windows, actual = _windows(pa[:, None], 12, 1)
    held = slice(int((len(pa) - 12 + 1) * 0.8), None)
    forecaster = Forecaster(read_bundle(out))
    got = np.stack([forecaster.predict(w.astype(np.float32)).copy() for w in windows[held]])
    assert np.abs(got - actual[held]).mean() == pytest.approx(own[0, 0], rel=1e-3)
    # The bundle's residual quantiles, where the agent's intervals start: the same residuals.
    q = {p: np.array(t) for p, t in acc.residual_quantiles.items()}
    assert list(q) == ["0.05", "0.1", "0.25", "0.5", "0.75", "0.9", "0.95"]
    assert all(q[a][0, 0] <= q[b][0, 0] for a, b in zip(list(q), list(q)[1:]))
    residual = (actual[held] - got)[:, 0, 0]
    assert np.quantile(residual, 0.9) == pytest.approx(q["0.9"][0, 0], rel=1e-3, abs=1e-6)
    inside = (residual >= q["0.1"][0, 0]) & (residual <= q["0.9"][0, 0])
    assert 0.75 <= inside.mean() <= 0.85  # the 80 % band, on the windows it was measured on


@pytest.mark.parametrize("auto", [False, True])
def test_a_refused_float32_never_blames_quantization(auto: bool) -> None:
    # No conversion: float32 refused for disagreeing with Keras is rare and model-specific
    # (inputs of ~1e5 into a model that saw 0..1 until its outputs lose float32 precision);
    # what matters is the rule that words the refusal.
    from sensorcast.convert.report import Candidate, TargetStats
    from sensorcast.convert.select import decide

    f32 = Candidate(mode="float32", status="beyond bound", size=1000, latency_ms=0.1)
    f32.reason = "disagrees with Keras beyond the float32 bound for pa: MAE 3e+03"
    f32.targets = {"pa": TargetStats(std=1e3, mae=3e3, max_abs=9e3, max_abs_all=9e3)}
    others = [Candidate(mode="int8", status="beyond bound", reason=f32.reason, size=400)]
    decision = decide([f32, *others] if auto else [f32], auto, {"pa": 20.0}, False, False)
    assert decision.chosen is None
    assert (
        "pass --norm" in decision.why and "outside what the model saw in training" in decision.why
    )
    assert "less aggressive" not in decision.why


@pytest.fixture(scope="module")
def pressure(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """A Normalization layer adapted to pressure in Pa: constants past float16's 65504."""
    import keras

    keras.utils.set_random_seed(0)
    tmp = tmp_path_factory.mktemp("pressure")
    t = np.arange(300)
    pa = 101300 + 1500 * np.sin(2 * np.pi * t / 48)
    pa += np.random.default_rng(1).normal(0, 20, len(t))
    norm = keras.layers.Normalization(axis=-1, name="pressure_norm")
    norm.adapt(pa.reshape(-1, 1, 1))
    x, y = _windows(pa[:, None], 12, 1)
    model = keras.Sequential(
        [
            keras.Input((12, 1)),
            norm,
            keras.layers.LSTM(8),
            keras.layers.Dense(1),
            keras.layers.Rescaling(1500.0, offset=101300.0),
        ]
    )
    path = _fit(model, x, (y[:, 0, :] - 101300) / 1500, 2, tmp / "pressure.keras")
    return Model(path, _csv(tmp / "pressure.csv", ["pressure"], pa[:, None]), pa[:, None])


def test_the_sanity_bound_holds_with_max_error_and_force_is_the_only_way_past(
    pressure: Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p16.tflite"
    args = [pressure.path, "-o", out, "--calibration", pressure.csv, "--quantize", "float16"]
    # a generous budget no longer switches the bound off
    assert _run(*args, "--max-error", "1e9") == 1
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert "Normalization layer 'pressure_norm'" in line and "overflows float16" in line
    assert "--norm" in line and not out.exists()

    assert _run(*args, "--max-error", "1e9", "--force") == 0
    captured = capsys.readouterr()
    assert "FORCED" in captured.err and "FORCED" in captured.out
    m = read_bundle(out).manifest
    assert m.forced and m.quantization == "float16"
    assert any(w.startswith("FORCED") for w in m.warnings)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Model, Path]:
    """Two targets in different units: temperature in °C and pressure in Pa."""
    import keras

    keras.utils.set_random_seed(0)
    tmp = tmp_path_factory.mktemp("mixed")
    t = np.arange(300)
    rng = np.random.default_rng(2)
    data = np.column_stack(
        [
            20 + 3 * np.sin(2 * np.pi * t / 48) + rng.normal(0, 0.2, len(t)),
            101300 + 500 * np.cos(2 * np.pi * t / 48) + rng.normal(0, 20, len(t)),
        ]
    )
    mean, std = data.mean(axis=0), data.std(axis=0)
    x, y = _windows((data - mean) / std, 12, 2)
    model = keras.Sequential(
        [
            keras.Input((12, 2)),
            keras.layers.LSTM(8),
            keras.layers.Dense(4),
            keras.layers.Reshape((2, 2)),
        ]
    )
    path = _fit(model, x, y, 3, tmp / "mixed.keras")
    norm = tmp / "norm.json"
    norm.write_text(
        json.dumps({c: {"mean": mean[i], "std": std[i]} for i, c in enumerate(["temp", "pa"])})
    )
    return Model(path, _csv(tmp / "mixed.csv", ["temp", "pa"], data), data), norm


def test_budget_and_errors_per_target_in_its_own_units(
    mixed: tuple[Model, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, norm = mixed
    out, report = tmp_path / "mixed.tflite", tmp_path / "report.json"
    args = [model.path, "-o", out, "--calibration", model.csv, "--norm", norm,
            "--targets", "temp,pa", "--quantize", "float32", "--report", report]  # fmt: skip
    assert _run(*args, "--max-error", "temp=0.5,pa=50") == 0
    table = capsys.readouterr().out
    assert "temp" in table and "pa" in table  # each target's own row in the table
    acc = read_bundle(out).manifest.accuracy
    assert acc is not None and set(acc.per_target) == {"temp", "pa"}
    temp, pa = acc.per_target["temp"], acc.per_target["pa"]
    assert temp.std == pytest.approx(model.data[:, 0].std(), rel=1e-3)
    assert pa.std == pytest.approx(model.data[:, 1].std(), rel=1e-3)
    assert pa.max_abs_all >= pa.max_abs and temp.max_abs_all >= temp.max_abs
    data = json.loads(report.read_text())
    assert data["max_error_per_target"] == {"temp": 0.5, "pa": 50.0}
    (row,) = data["modes"]
    assert set(row["per_target"]) == {"temp", "pa"} and row["verified_std"] == 2
    assert set(read_bundle(out).manifest.verified_range) == {"temp", "pa"}


def test_each_target_is_judged_against_its_own_budget() -> None:
    from sensorcast.convert.report import Candidate, TargetStats
    from sensorcast.convert.select import budgets, decide

    def candidate(mode: str, size: int, temp_mae: float) -> Candidate:
        c = Candidate(mode=mode, size=size, latency_ms=0.1)
        c.targets = {  # pa, in Pa, would hide temp's error in a mean of the two
            "temp": TargetStats(std=3.0, mae=temp_mae, max_abs=temp_mae, beyond={1: (temp_mae, 0)}),
            "pa": TargetStats(std=500.0, mae=1.0, max_abs=2.0, beyond={1: (1.0, 2.0)}),
        }
        return c

    budget = budgets(None, ["temp", "pa"], np.array([3.0, 500.0]))
    assert budget == pytest.approx({"temp": 0.06, "pa": 10.0})
    small, large = candidate("int8", 100, temp_mae=0.5), candidate("float32", 400, 0.001)
    decision = decide([large, small], True, budget, False, False)
    assert decision.chosen is large and small.status == "over budget" and "(temp)" in small.reason
    assert budgets(1.0, ["temp", "pa"], np.array([3.0, 500.0])) == {"temp": 1.0, "pa": 1.0}
    given = budgets({"pa": 5.0}, ["temp", "pa"], np.array([3.0, 500.0]))
    assert given == pytest.approx({"temp": 0.06, "pa": 5.0})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-error", "temp=x"], "--max-error 'temp=x': give a positive number"),
        (["--max-error", "-1"], "give a positive number"),
        (["--season", "0"], "--season must be"),
    ],
)
def test_new_options_are_checked_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert _run(tmp_path / "none.keras", "-o", tmp_path / "o.tflite", *args) == 1
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert message in line
