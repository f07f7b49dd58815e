"""Run a converted bundle with the agent's own code and compare it with the reference."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import Manifest, read_bundle
from sensorcast.convert.bundle import embed_manifest
from sensorcast.convert.load import SourceModel

__all__ = ["BOUNDS", "Agreement", "measure", "reference_forecast", "within_bound"]

#: How far each mode may stray from Keras before the converter refuses it,
#: relative to the targets' std: (MAE, max abs). A sanity bound for a broken
#: conversion, not the accuracy budget (that is --max-error).
BOUNDS = {
    "float32": (1e-4, 1e-3),
    "float16": (5e-3, 2e-2),
    "dynamic": (5e-2, 0.25),
    "int8": (0.1, 0.5),
}


@dataclass(frozen=True)
class Agreement:
    """Converted model vs reference on the same windows, in target units."""

    mae: float
    max_abs: float
    scale: float  #: Targets' std the errors are compared with.
    windows: int
    latency_ms: float  #: Mean time of one forecast through the agent's Forecaster.
    batch_diff: float = 0.0  #: Largest difference between batched and single forecasts.

    @property
    def rel_mae(self) -> float:
        return self.mae / self.scale

    @property
    def rel_max(self) -> float:
        return self.max_abs / self.scale


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


def measure(
    tflite: bytes,
    manifest: Manifest,
    windows: np.ndarray,
    expected: np.ndarray,
    target_std: Optional[np.ndarray],
    progress: bool = False,
) -> Agreement:
    """Forecast every window through the agent's own
    :class:`~sensorcast.agent.forecast.forecaster.Forecaster`, compare and time it."""
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="sensorcast-verify-") as tmp:
        path = Path(tmp) / "candidate.tflite"
        path.write_bytes(embed_manifest(tflite, manifest))
        forecaster = Forecaster(read_bundle(path))
        inputs = windows.astype(np.float32)
        got = np.empty_like(expected)
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
    err = np.abs(got - expected)
    if target_std is not None and np.all(target_std > 0):
        scale = float(np.mean(target_std))
    else:
        scale = float(np.std(expected)) or 1.0
    return Agreement(
        mae=float(err.mean()),
        max_abs=float(err.max()),
        scale=scale,
        windows=len(windows),
        latency_ms=latency,
        batch_diff=batch_diff,
    )


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


def within_bound(mode: str, agreement: Agreement) -> bool:
    """True when the agreement is inside the mode's sanity bound."""
    rel_mae, rel_max = BOUNDS[mode]
    return agreement.rel_mae <= rel_mae and agreement.rel_max <= rel_max
