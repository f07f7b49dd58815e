"""Rebuild the demo model and its bundle: examples/demo/room.{keras,tflite}.

Run from the repository root with the [convert] extra installed:

    python examples/demo/train.py                 # train, then convert
    python examples/demo/train.py --convert-only  # convert the existing room.keras

Trains a small LSTM on 30 days of the synthetic room (agent.demo.room_series,
the same generator the demo feeds the agent), with normalization statistics
from the training split only, then converts it with `sensorcast convert`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from agent.demo import DEMO_PERIOD_S, room_series

HERE = Path(__file__).resolve().parent
WINDOW, HORIZON = 24, 12  # 2 h of 5-minute readings -> the next hour
FEATURES, TARGETS = ["temperature", "humidity"], ["temperature"]
DAYS = 30


def main() -> int:
    import keras

    keras.utils.set_random_seed(42)
    n = DAYS * 86400 // int(DEMO_PERIOD_S)
    rows = room_series(n, start=1_767_225_600.0)  # 2026-01-01T00:00:00Z
    split = int(n * 0.8)
    train, held = rows[:split], rows[split:]
    mean = train[:, 1:].mean(axis=0)
    std = train[:, 1:].std(axis=0)
    norm = {name: {"mean": float(mean[i]), "std": float(std[i])} for i, name in enumerate(FEATURES)}
    (HERE / "norm.json").write_text(json.dumps(norm, indent=2) + "\n")
    header = "ts," + ",".join(FEATURES)
    np.savetxt(HERE / "room.csv", held, delimiter=",", header=header, comments="", fmt="%.3f")

    def windows(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = (part[:, 1:] - mean) / std
        count = len(z) - WINDOW - HORIZON + 1
        x = np.stack([z[i : i + WINDOW] for i in range(count)])
        y = np.stack([z[i + WINDOW : i + WINDOW + HORIZON, 0] for i in range(count)])
        return x.astype("float32"), y.astype("float32")

    x_train, y_train = windows(train)
    x_val, y_val = windows(held)
    model = keras.Sequential(
        [keras.Input((WINDOW, len(FEATURES))), keras.layers.LSTM(32), keras.layers.Dense(HORIZON)]
    )
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=20,
        batch_size=64,
        callbacks=[keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)],
        verbose=2,
    )
    _, mae = model.evaluate(x_val, y_val, verbose=0)
    print(f"validation MAE {mae * std[0]:.3f} °C")
    model.save(HERE / "room.keras")
    write_golden(model, held, mean, std)
    return convert()


def convert() -> int:
    """Convert room.keras with the automatic, accuracy-guarded mode choice."""
    return subprocess.call(
        [
            sys.executable, "-m", "agent", "convert", str(HERE / "room.keras"),
            "-o", str(HERE / "room.tflite"),
            "--quantize", "auto",
            "--report", str(HERE / "report.json"),
            "--calibration", str(HERE / "room.csv"),
            "--norm", str(HERE / "norm.json"),
            "--features", ",".join(FEATURES),
            "--targets", ",".join(TARGETS),
            "--period", str(DEMO_PERIOD_S),
        ]
    )  # fmt: skip


def write_golden(model: object, held: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """Keras forecasts for 32 held-out windows, in °C: the bundle's golden test data."""
    starts = np.linspace(0, len(held) - WINDOW, 32).astype(int)
    windows = np.stack([held[s : s + WINDOW, 1:] for s in starts])
    z = ((windows - mean) / std).astype("float32")
    forecast = model.predict(z, verbose=0) * std[0] + mean[0]  # type: ignore[attr-defined]
    np.savez(HERE / "golden.npz", windows=windows, forecast=forecast[..., None])


if __name__ == "__main__":
    raise SystemExit(convert() if "--convert-only" in sys.argv[1:] else main())
