"""Phase 1 (child ``prep``): train a grid point's model, keep its reference outputs, export ONNX.

The model is ``keras.Sequential([Input((window, 3)), LSTM(units), Dense(12)])`` trained one
epoch (seeded) on the synthetic series; the reference is Keras ``predict`` of the saved
model on the held-out windows. ONNX: Keras 3's own export first, tf2onnx if it fails; the
model as it is (its LSTM an ONNX ``Loop``) and its unrolled clone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.convert.grid import (
    HORIZON,
    N_CALIB,
    N_EVAL,
    N_FEATURES,
    N_TRAIN,
    SEED,
    last_line,
    synthetic_series,
    windows_from,
)

__all__ = ["child_prep"]


def _train(units: int, window: int, work: Path) -> tuple[Any, dict[str, Any]]:
    """Train and save the model; the loaded model and the figures of the training."""
    import keras

    keras.utils.set_random_seed(SEED + 1000 * units + window)
    series = synthetic_series()
    n = len(series)
    x_train, y_train = windows_from(series, window, N_TRAIN, 0, int(0.7 * n))
    x_cal, _ = windows_from(series, window, N_CALIB, int(0.7 * n), int(0.85 * n))
    x_eval, _ = windows_from(series, window, N_EVAL, int(0.85 * n), n)
    model = keras.Sequential(
        [
            keras.Input((window, N_FEATURES)),
            keras.layers.LSTM(units),
            keras.layers.Dense(HORIZON),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    started = time.monotonic()
    hist = model.fit(x_train, y_train, epochs=1, batch_size=32, shuffle=True, verbose=0)
    train_s = time.monotonic() - started
    path = work / "model.keras"
    model.save(path)
    # The reference: Keras predict of the saved model, as the converter sees it.
    loaded = keras.models.load_model(path, compile=False)
    expected = np.asarray(loaded.predict(x_eval, batch_size=N_EVAL, verbose=0))
    np.savez(work / "data.npz", calib=x_cal, eval=x_eval, expected=expected)
    return loaded, {
        "params": int(model.count_params()),
        "train_loss": float(hist.history["loss"][-1]),
        "train_s": train_s,
        "output_std": float(np.std(expected)),
        "keras_bytes": path.stat().st_size,
    }


def _export_onnx(m: Any, window: int, dest: Path) -> dict[str, Any]:
    """Keras 3's own ONNX export first; tf2onnx directly if it fails."""
    import tensorflow as tf

    sig = [tf.TensorSpec((1, window, N_FEATURES), tf.float32)]
    tried: list[str] = []
    t0 = time.monotonic()
    try:
        m.export(str(dest), format="onnx", input_signature=sig, verbose=False)
        route = "keras model.export(format='onnx')"
        return {"path": str(dest), "route": route, "seconds": time.monotonic() - t0, "failed": []}
    except Exception as exc:  # record why, then try the other route
        tried.append(f"keras export: {last_line(exc)}")
    t0 = time.monotonic()
    try:
        import tf2onnx

        spec = (tf.TensorSpec((1, window, N_FEATURES), tf.float32, name="x"),)
        fn = tf.function(lambda x: m(x, training=False), input_signature=spec)
        tf2onnx.convert.from_function(fn, input_signature=spec, output_path=str(dest))
        return {
            "path": str(dest),
            "route": "tf2onnx.convert.from_function",
            "seconds": time.monotonic() - t0,
            "failed": tried,
        }
    except Exception as exc:
        tried.append(f"tf2onnx: {last_line(exc)}")
    return {"error": "; ".join(tried), "failed": tried}


def child_prep(spec: dict[str, Any]) -> dict[str, Any]:
    """Train the model 1 epoch, save it, its reference outputs, and its ONNX exports."""
    units, window = spec["units"], spec["window"]
    work = Path(spec["dir"])
    loaded, out = _train(units, window, work)
    out["onnx"] = _export_onnx(loaded, window, work / "model.onnx")
    try:
        from sensorcast.convert._worker import unrolled_clone

        clone = unrolled_clone(loaded, window, N_FEATURES)
        out["onnx_unrolled"] = _export_onnx(clone, window, work / "model-unrolled.onnx")
    except Exception as exc:
        out["onnx_unrolled"] = {"error": f"unrolled clone: {last_line(exc)}"}
    return out
