"""The models the agent's questions run: the demo's, and an LSTM(64) x 48 trained at bench time.

The ``prepare`` child trains the LSTM (one epoch, seeded) and converts with this checkout's
converter every bundle the questions need (float32, and ``--batch 100`` for question 3), and
the LSTM's int8 (the fused ``UNIDIRECTIONAL_SEQUENCE_LSTM``) and dynamic-range bundles for the
modes question (:mod:`bench.agent.modes`), calibrated on the series it was trained on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.agent.common import LSTM, LSTM_FEATURES, STREAMS
from bench.harness.paths import DEMO_DIR

__all__ = ["child_prepare", "demo_bundle"]


def _calibration_csv(series: np.ndarray, path: Path) -> Path:
    """The training series as a calibration CSV (``ts`` every 60 s, one column per feature)."""
    ts = 1_769_040_000 + 60 * np.arange(len(series))
    rows = "".join(f"{t},{','.join(f'{v:.5f}' for v in row)}\n" for t, row in zip(ts, series))
    path.write_text(f"ts,{','.join(LSTM_FEATURES)}\n{rows}")
    return path


def _train_lstm(work: Path) -> Path:
    """LSTM(64) x window 48 on 3 sine features, one epoch, seeded; the .keras file (and the
    series as ``lstm_calibration.csv`` beside it)."""
    import keras

    units, window = LSTM
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    t = np.arange(6000)
    series = np.column_stack(
        [np.sin(2 * np.pi * t / 288) + 0.1 * rng.standard_normal(6000) for _ in LSTM_FEATURES]
    ).astype(np.float32)
    _calibration_csv(series[-1500:], work / "lstm_calibration.csv")
    n = 2048
    idx = rng.integers(0, len(series) - window - 12, n)
    x = np.stack([series[i : i + window] for i in idx])
    y = np.stack([series[i + window : i + window + 12, 0] for i in idx])
    model = keras.Sequential(
        [
            keras.Input((window, len(LSTM_FEATURES))),
            keras.layers.LSTM(units),
            keras.layers.Dense(12),
        ]
    )
    model.compile("adam", "mse")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = work / "lstm64x48.keras"
    model.save(path)
    return path


def child_prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """Train the LSTM and convert every bundle needed; paths (None for a failed one)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sensorcast.convert.cli import main as convert_main

    work = Path(spec["work"])
    lstm_keras = _train_lstm(work)
    calib = work / "lstm_calibration.csv"
    demo = [
        str(DEMO_DIR / "room.keras"),
        "--norm",
        str(DEMO_DIR / "norm.json"),
        "--features",
        "temperature,humidity",
        "--period",
        "300",
    ]
    lstm = [
        str(lstm_keras),
        "--features",
        ",".join(LSTM_FEATURES),
        "--targets",
        "a",
        "--period",
        "60",
    ]
    jobs = {
        "demo_f32": [*demo, "--quantize", "float32"],
        "demo_batch": [*demo, "--quantize", "float32", "--batch", str(STREAMS)],
        "lstm_f32": [*lstm, "--quantize", "float32"],
        "lstm_batch": [*lstm, "--quantize", "float32", "--batch", str(STREAMS)],
        "lstm_int8": [*lstm, "--quantize", "int8", "--calibration", str(calib)],
        "lstm_dynamic": [*lstm, "--quantize", "dynamic", "--calibration", str(calib)],
    }
    out: dict[str, Any] = {"lstm_keras": str(lstm_keras)}
    for name, args in jobs.items():
        dest = work / f"{name}.tflite"
        code = convert_main([args[0], "-o", str(dest), "--quiet", *args[1:]])
        out[name] = str(dest) if code == 0 else None
    return out


def demo_bundle(out: Path, period_s: float) -> Path:
    """The demo's Keras model converted (float32) with another period (s), so windows fill
    fast (the soak and the flood)."""
    from sensorcast.convert.cli import main as convert_main

    code = convert_main([str(DEMO_DIR / "room.keras"), "-o", str(out), "--quiet",
                         "--norm", str(DEMO_DIR / "norm.json"), "--features",
                         "temperature,humidity", "--quantize", "float32",
                         "--period", str(period_s)])  # fmt: skip
    if code != 0:
        raise SystemExit(f"converting the demo model for the benchmark failed ({code})")
    return out
