"""The grid of models the converter benchmark measures, its data, and the error measure.

Imports only the standard library and numpy: the tflite-runtime child (numpy < 2) uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BUDGET",
    "CONFIG_TITLES",
    "HORIZON",
    "LITERT_CONFIGS",
    "N_CALIB",
    "N_EVAL",
    "N_FEATURES",
    "N_TRAIN",
    "PROJECT_MODES",
    "QUICK_POINTS",
    "SEED",
    "TFLITE_RUNTIME_CONFIGS",
    "UNITS",
    "UNROLLED_VARIANTS",
    "VARIANTS",
    "WINDOWS",
    "errors",
    "last_line",
    "make_points",
    "synthetic_series",
    "windows_from",
]

UNITS = (16, 64, 128)
WINDOWS = (24, 48, 168)
QUICK_POINTS = ((16, 24), (64, 48))
N_FEATURES = 3
HORIZON = 12
N_TRAIN = 4096  #: windows for the one training epoch (128 steps of 32)
N_CALIB = 100  #: windows for int8 calibration
N_EVAL = 50  #: windows the error is measured on
SEED = 20240601
BUDGET = 0.02  #: the error budget of question 4: MAE <= 2 % of the Keras outputs' std

PROJECT_MODES = ("float32", "float16", "dynamic", "int8")
UNROLLED_VARIANTS = ("float32-unrolled", "float16-unrolled", "dynamic-unrolled")
VARIANTS = PROJECT_MODES + UNROLLED_VARIANTS
#: Interpreter configurations: (label, XNNPACK default delegate on, num_threads).
LITERT_CONFIGS = (("1T", True, 1), ("1T-noXNN", False, 1), ("2T", True, 2), ("2T-noXNN", False, 2))
TFLITE_RUNTIME_CONFIGS = (("1T", True, 1), ("1T-noXNN", False, 1))
CONFIG_TITLES = {
    "1T": "1 thread ms",
    "1T-noXNN": "1 thread, no XNNPACK ms",
    "2T": "2 threads ms",
    "2T-noXNN": "2 threads, no XNNPACK ms",
}


def make_points(grid: list[tuple[int, int]], workdir: Path) -> list[dict[str, Any]]:
    """One point per (units, window), each with its own directory under ``workdir``."""
    points = []
    for units, window in grid:
        d = workdir / f"lstm{units}-w{window}"
        d.mkdir(exist_ok=True)
        name = f"LSTM({units}), window {window}"
        points.append({"units": units, "window": window, "dir": str(d), "name": name})
    return points


def errors(got: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """MAE and max abs error, absolute and relative to the std of the expected outputs."""
    err = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    scale = float(np.std(expected)) or 1.0
    return {
        "mae": float(err.mean()),
        "max": float(err.max()),
        "rel_mae": float(err.mean()) / scale,
        "rel_max": float(err.max()) / scale,
    }


def synthetic_series(n: int = 8000, seed: int = SEED) -> np.ndarray:
    """Hourly-like series of 3 features: daily and weekly cycles plus noise, ``(n, 3)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    day, week = 2 * np.pi * t / 24, 2 * np.pi * t / 168
    f0 = np.sin(day) + 0.5 * np.sin(week + 1.0) + 0.1 * rng.standard_normal(n)
    f1 = 0.7 * np.cos(day) - 0.3 * f0 + 0.1 * rng.standard_normal(n)
    f2 = 0.5 * np.sin(2 * day + 0.3) + 0.2 * rng.standard_normal(n)
    return np.stack([f0, f1, f2], axis=1).astype(np.float32)


def windows_from(
    series: np.ndarray, window: int, count: int, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` evenly spaced windows starting in ``[lo, hi)`` and the next 12 values of f0."""
    starts = np.linspace(lo, hi - window - HORIZON, count).astype(int)
    x = np.stack([series[s : s + window] for s in starts])
    y = np.stack([series[s + window : s + window + HORIZON, 0] for s in starts])
    return x.astype(np.float32), y.astype(np.float32)


def last_line(exc: BaseException) -> str:
    """The informative line of an exception: the interpreter's "Didn't find op" or the last."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    pick = next((ln for ln in lines if "Didn't find op" in ln), lines[-1] if lines else "")
    pick = pick.split(". An older version")[0]
    return f"{type(exc).__name__}: {pick}"[:300]
