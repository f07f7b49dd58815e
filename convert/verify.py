"""Run a converted bundle with the agent's own code and compare it with Keras."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from agent.forecast import Forecaster
from agent.manifest import Manifest, read_bundle
from convert.bundle import embed_manifest

__all__ = ["BOUNDS", "Agreement", "keras_forecast", "measure", "within_bound"]

#: How far each mode may stray from Keras, relative to the targets' std:
#: (max relative MAE, max relative max-abs error).
BOUNDS = {
    "float32": (1e-4, 1e-3),
    "float16": (5e-3, 2e-2),
    "dynamic": (5e-2, 0.25),
    "int8": (0.1, 0.5),
}


@dataclass(frozen=True)
class Agreement:
    """Converted model vs Keras on the same windows, in target units."""

    mae: float
    max_abs: float
    scale: float  #: Targets' std the errors are compared with.
    windows: int

    @property
    def rel_mae(self) -> float:
        return self.mae / self.scale

    @property
    def rel_max(self) -> float:
        return self.max_abs / self.scale


def keras_forecast(model: Any, windows: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Keras predictions for raw windows, de-normalized: ``(n, horizon, targets)``."""
    norm = manifest.normalization
    x = windows.astype(np.float64)
    if norm:
        mean = np.array([norm[f].mean for f in manifest.features])
        std = np.array([norm[f].std for f in manifest.features])
        x = (x - mean) / std
    y = np.asarray(model.predict(x.astype(np.float32), batch_size=256, verbose=0), np.float64)
    y = y.reshape(len(windows), manifest.horizon, len(manifest.targets))
    if norm:
        y = y * np.array([norm[t].std for t in manifest.targets]) + np.array(
            [norm[t].mean for t in manifest.targets]
        )
    return y


def measure(
    tflite: bytes,
    manifest: Manifest,
    windows: np.ndarray,
    expected: np.ndarray,
    target_std: Optional[np.ndarray],
) -> Agreement:
    """Forecast every window through :class:`agent.forecast.Forecaster` and compare."""
    with tempfile.TemporaryDirectory(prefix="sensorcast-verify-") as tmp:
        path = Path(tmp) / "candidate.tflite"
        path.write_bytes(embed_manifest(tflite, manifest))
        forecaster = Forecaster(read_bundle(path))
        got = np.empty_like(expected)
        for i, window in enumerate(windows.astype(np.float32)):
            got[i] = forecaster.predict(window)
    err = np.abs(got - expected)
    if target_std is not None and np.all(target_std > 0):
        scale = float(np.mean(target_std))
    else:
        scale = float(np.std(expected)) or 1.0
    return Agreement(
        mae=float(err.mean()), max_abs=float(err.max()), scale=scale, windows=len(windows)
    )


def within_bound(mode: str, agreement: Agreement) -> bool:
    """True when the agreement is inside the mode's bound."""
    rel_mae, rel_max = BOUNDS[mode]
    return agreement.rel_mae <= rel_mae and agreement.rel_max <= rel_max
