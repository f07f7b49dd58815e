"""`sensorcast train` and `sensorcast evaluate` for real on a small CSV: the split is
chronological, normalization comes from the training rows only, and evaluation of the Keras
model and of its bundle agree and are compared with naive baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sensorcast.agent.cli import main as cli

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five days of a room at 15-minute periods that warms up over time (so the training
    rows' mean differs from the whole file's)."""
    path = tmp_path_factory.mktemp("train") / "room.csv"
    t = 1.7e9 + np.arange(480) * 900.0
    rng = np.random.default_rng(1)
    temp = 19 + 2 * np.sin(2 * np.pi * t / 86400) + np.linspace(0, 3, len(t))
    temp += rng.normal(0, 0.05, len(t))
    hum = 55 - 4 * np.sin(2 * np.pi * t / 86400)
    np.savetxt(path, np.c_[t, temp, hum], delimiter=",", header="ts,temperature,humidity",
               comments="", fmt="%.4f")  # fmt: skip
    return path


def test_train_then_evaluate_keras_and_bundle(
    csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "room.keras"
    args = ["train", str(csv), "--features", "temperature,humidity", "--targets",
            "temperature", "--window", "16", "--horizon", "4", "-o", str(model),
            "--epochs", "4", "--quiet"]  # fmt: skip
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "next: sensorcast convert" in out
    norm = json.loads((tmp_path / "room.norm.json").read_text())
    data = np.loadtxt(csv, delimiter=",", skiprows=1)
    train_rows = data[: len(data) * 7 // 10]
    assert norm["temperature"]["mean"] == pytest.approx(train_rows[:, 1].mean())
    assert norm["temperature"]["mean"] < data[:, 1].mean() - 0.2  # not the whole file's
    assert norm["humidity"]["std"] == pytest.approx(train_rows[:, 2].std())

    keras_report = tmp_path / "keras.json"
    plot = tmp_path / "eval.png"
    assert cli(["evaluate", str(model), str(csv), "--features", "temperature,humidity",
                "--targets", "temperature", "--plot", str(plot),
                "--report", str(keras_report)]) == 0  # fmt: skip
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    k = json.loads(keras_report.read_text())
    assert k["test_rows"] == [len(data) * 9 // 10, len(data) - 1]
    assert set(k["results"]) == {"model", "last value", "seasonal (96 periods)"}
    assert len(k["results"]["model"]["mae_by_step"]) == 4
    for name, r in k["results"].items():
        assert 0 < r["mae"] <= r["rmse"], name

    bundle = tmp_path / "room.tflite"
    assert cli(["convert", str(model), "-o", str(bundle), "--norm",
                str(tmp_path / "room.norm.json"), "--features", "temperature,humidity",
                "--targets", "temperature", "--quantize", "float32", "--period", "900",
                "--quiet"]) == 0  # fmt: skip
    bundle_report = tmp_path / "bundle.json"
    assert cli(["evaluate", str(bundle), str(csv), "--report", str(bundle_report)]) == 0
    b = json.loads(bundle_report.read_text())
    assert b["forecasts"] == k["forecasts"]
    assert b["results"]["model"]["mae"] == pytest.approx(k["results"]["model"]["mae"], rel=1e-4)
    assert b["results"]["last value"] == k["results"]["last value"]


def test_too_little_data_and_missing_columns_are_one_clear_line(
    csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "short.csv"
    short.write_text("\n".join(csv.read_text().splitlines()[:60]) + "\n")
    base = ["--window", "16", "--horizon", "4", "-o", str(tmp_path / "m.keras"), "--quiet"]
    assert cli(["train", str(short), "--features", "temperature", *base]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sensorcast train: error:") and "rows are too few" in err[-1]
    assert cli(["train", str(csv), "--features", "temperature,co2", *base]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "no column co2" in err[-1] and "--features" in err[-1]
