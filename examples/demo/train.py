"""Rebuild the demo model and its bundle: examples/demo/room.{keras,tflite}.

Run from the repository root with the [convert] extra installed:

    python examples/demo/train.py                 # train, then convert
    python examples/demo/train.py --convert-only  # convert the existing room.keras, evaluate

Writes 30 days of the synthetic room (sensorcast.agent.demo.room_series, the same generator
the demo feeds the agent) to room-30d.csv, trains on it with `sensorcast train`
(70/20/10 chronological split, normalization from the training rows), converts
with `sensorcast convert` calibrated on the held-out rows (room.csv), and
evaluates the bundle with `sensorcast evaluate` (evaluate.png, evaluate.json: errors
against the naive baselines and the coverage of its 80 % band on the test split).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from sensorcast.agent.demo import DEMO_PERIOD_S, room_series

HERE = Path(__file__).resolve().parent
WINDOW, HORIZON = 24, 12  # 2 h of 5-minute readings -> the next hour
FEATURES, TARGETS = ["temperature", "humidity"], ["temperature"]
DAYS = 30


def main() -> int:
    n = DAYS * 86400 // int(DEMO_PERIOD_S)
    rows = room_series(n, start=1_767_225_600.0)  # 2026-01-01T00:00:00Z
    header = "ts," + ",".join(FEATURES)
    data = HERE / "room-30d.csv"
    np.savetxt(data, rows, delimiter=",", header=header, comments="", fmt="%.3f")
    code = subprocess.call(
        [
            sys.executable, "-m", "sensorcast.agent", "train", str(data),
            "--features", ",".join(FEATURES), "--targets", ",".join(TARGETS),
            "--window", str(WINDOW), "--horizon", str(HORIZON), "--period", str(DEMO_PERIOD_S),
            "-o", str(HERE / "room.keras"), "--norm-out", str(HERE / "norm.json"),
        ]
    )  # fmt: skip
    if code:
        return code
    # Calibration and the converter's checks use the rows training did not see (validation
    # and test: the last 30 %), as `sensorcast train` split them.
    held = rows[n * 7 // 10 :]
    np.savetxt(HERE / "room.csv", held, delimiter=",", header=header, comments="", fmt="%.3f")
    write_golden(held)
    code = convert()
    if code:
        return code
    return evaluate()


def evaluate() -> int:
    """Score the bundle on the test split (the last 10 % of room-30d.csv) against the naive
    baselines; the plot draws its 80 % band from the manifest's residual quantiles."""
    return subprocess.call(
        [
            sys.executable, "-m", "sensorcast.agent", "evaluate", "examples/demo/room.tflite",
            "examples/demo/room-30d.csv",
            "--plot", "examples/demo/evaluate.png", "--report", "examples/demo/evaluate.json",
        ],
        cwd=HERE.parent.parent,  # the report names the files relative to the repository
    )  # fmt: skip


def convert() -> int:
    """Convert room.keras to dynamic-range int8 weights (what `--quantize auto` chose), calibrated
    on the held-out rows, so the manifest records the residual quantiles the agent's
    prediction intervals start from."""
    return subprocess.call(
        [
            sys.executable, "-m", "sensorcast.agent", "convert", str(HERE / "room.keras"),
            "-o", str(HERE / "room.tflite"),
            "--quantize", "dynamic",
            "--report", str(HERE / "report.json"),
            "--calibration", str(HERE / "room.csv"),
            "--norm", str(HERE / "norm.json"),
            "--features", ",".join(FEATURES),
            "--targets", ",".join(TARGETS),
            "--period", str(DEMO_PERIOD_S),
        ]
    )  # fmt: skip


def write_golden(held: np.ndarray) -> None:
    """Keras forecasts for 32 held-out windows, in °C: the bundle's golden test data."""
    import keras

    model = keras.saving.load_model(HERE / "room.keras")
    norm = json.loads((HERE / "norm.json").read_text())
    mean = np.array([norm[f]["mean"] for f in FEATURES])
    std = np.array([norm[f]["std"] for f in FEATURES])
    starts = np.linspace(0, len(held) - WINDOW, 32).astype(int)
    windows = np.stack([held[s : s + WINDOW, 1:] for s in starts])
    z = ((windows - mean) / std).astype("float32")
    forecast = model.predict(z, verbose=0) * std[0] + mean[0]
    np.savez(HERE / "golden.npz", windows=windows, forecast=forecast[..., None])


if __name__ == "__main__":
    raise SystemExit((convert() or evaluate()) if "--convert-only" in sys.argv[1:] else main())
