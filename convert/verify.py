"""Run a converted bundle with the agent's own code and compare it with the reference."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import Manifest, read_bundle
from sensorcast.convert.bundle import embed_manifest
from sensorcast.convert.load import SourceModel

__all__ = [
    "BOUNDS",
    "Errors",
    "Run",
    "bound_for",
    "errors",
    "reference_forecast",
    "run_bundle",
    "within_bound",
]

#: How far each mode may stray from Keras before the converter refuses it, relative to each
#: target's std: (MAE, max abs). A sanity bound for a broken conversion, not the accuracy
#: budget (that is --max-error); it always holds, ``--force`` is the only way past it.
BOUNDS = {
    "float32": (1e-4, 1e-3),
    "float16": (5e-3, 2e-2),
    "dynamic": (5e-2, 0.25),
    "int8": (0.1, 0.5),
}


def bound_for(mode: str) -> tuple[float, float]:
    """The sanity bound of ``mode``; a mode without its own (a new integer variant) gets
    int8's, the loosest."""
    return BOUNDS.get(mode, BOUNDS["int8"])


@dataclass(frozen=True)
class Errors:
    """Converted model vs reference on one set of windows, per target, in target units."""

    mae: np.ndarray  #: (targets,) mean absolute error; inf where the bundle gave NaN.
    max_abs: np.ndarray  #: (targets,) largest absolute error; inf where NaN.


def errors(got: np.ndarray, expected: np.ndarray) -> Errors:
    """Per-target errors of ``got`` against ``expected``, both ``(n, horizon, targets)``.

    A NaN or infinite forecast counts as an infinite error, so it never passes a bound.
    """
    err = np.abs(got.astype(np.float64) - expected)
    err = np.where(np.isfinite(err), err, np.inf)
    return Errors(mae=err.mean(axis=(0, 1)), max_abs=err.max(axis=(0, 1)))


def within_bound(mode: str, err: Errors, target_std: np.ndarray) -> np.ndarray:
    """Per target: True when ``err`` is inside the mode's sanity bound (target's own std)."""
    rel_mae, rel_max = bound_for(mode)
    held: np.ndarray = (err.mae <= rel_mae * target_std) & (err.max_abs <= rel_max * target_std)
    return held


def reference_forecast(source: SourceModel, windows: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Reference predictions for raw windows, de-normalized: ``(n, horizon, targets)``."""
    norm = manifest.normalization
    x = windows.astype(np.float64)
    if norm:
        mean = np.array([norm[f].mean for f in manifest.features])
        std = np.array([norm[f].std for f in manifest.features])
        x = (x - mean) / std
    y = source.predict(x.astype(np.float32))
    if norm:
        y = y * np.array([norm[t].std for t in manifest.targets]) + np.array(
            [norm[t].mean for t in manifest.targets]
        )
    return y


@dataclass(frozen=True)
class Run:
    """A bundle's forecasts for some windows, through the agent's own Forecaster."""

    forecasts: np.ndarray  #: (n, horizon, targets), target units.
    latency_ms: float  #: Mean time of one forecast.
    batch_diff: float  #: Largest difference between batched and single forecasts (0: none).


def run_bundle(
    tflite: bytes, manifest: Manifest, windows: np.ndarray, progress: bool = False
) -> Run:
    """Forecast every window (reading units) one at a time through the agent's own
    :class:`~sensorcast.agent.forecast.forecaster.Forecaster`, and time it."""
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="sensorcast-verify-") as tmp:
        path = Path(tmp) / "candidate.tflite"
        path.write_bytes(embed_manifest(tflite, manifest))
        forecaster = Forecaster(read_bundle(path))
        inputs = windows.astype(np.float32)
        got = np.empty((len(inputs), manifest.horizon, len(manifest.targets)))
        rows = tqdm(
            range(len(inputs)),
            desc=f"evaluating {manifest.quantization}",
            unit="window",
            file=sys.stderr,
            leave=False,
            disable=not progress or None,
        )
        for i in rows:
            got[i] = forecaster.predict(inputs[i])
        latency = _latency_ms(forecaster, inputs)
        batch_diff = 0.0
        if forecaster.batch_size > 1:
            n = min(len(inputs), 2 * forecaster.batch_size + 1)  # two full chunks and a padded one
            batched = forecaster.predict_batch(list(inputs[:n]))
            batch_diff = float(np.abs(batched - got[:n]).max())
    return Run(forecasts=got, latency_ms=latency, batch_diff=batch_diff)


def _latency_ms(forecaster: Forecaster, inputs: np.ndarray, budget_s: float = 0.3) -> float:
    """Mean milliseconds per forecast over at least 50 calls and ``budget_s`` seconds."""
    for window in inputs[:5]:  # warm-up
        forecaster.predict(window)
    calls, start = 0, time.perf_counter()
    while True:
        forecaster.predict(inputs[calls % len(inputs)])
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= 50 and elapsed >= budget_s:
            return 1000.0 * elapsed / calls
