"""Read calibration data and normalization, and cut them into model windows."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from sensorcast.agent.forecast.manifest import Norm
from sensorcast.convert import ConvertError

__all__ = [
    "TIME_COLUMNS",
    "Calibration",
    "load_calibration",
    "parse_time_features",
    "read_csv",
    "synthetic_windows",
]

#: Column names taken as timestamps, not features.
TIME_COLUMNS = ("ts", "time", "timestamp", "date", "datetime")
#: At most this many windows are used for calibration and for evaluation each.
MAX_WINDOWS = 512


@dataclass(frozen=True)
class Calibration:
    """Windows in reading units, split chronologically."""

    calibrate: np.ndarray  #: (n, window, features) windows for int8 calibration.
    evaluate: np.ndarray  #: (n, window, features) held-out windows to measure error on.
    data: str  #: "calibration" or "synthetic".
    target_std: Optional[np.ndarray]  #: Std of each target in the data, target units.
    period_s: Optional[float]  #: Median timestamp step, if the CSV had a time column.
    #: What happened after each ``evaluate`` window: ``(n, horizon, targets)`` actual target
    #: values (NaN past the data's end), when the CSV has the targets; else None.
    evaluate_actual: Optional[np.ndarray] = None


def read_csv(path: Path) -> tuple[list[str], np.ndarray, Optional[np.ndarray]]:
    """Read a CSV with a header; return (columns, values, timestamps or None)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError as exc:
        raise ConvertError(f"calibration {path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvertError(f"calibration {path}: cannot read it ({exc})") from exc
    if len(rows) < 2:
        raise ConvertError(f"calibration {path}: needs a header line and data rows")
    header = [h.strip() for h in rows[0]]
    time_col = next((i for i, h in enumerate(header) if h.lower() in TIME_COLUMNS), None)
    columns = [h for i, h in enumerate(header) if i != time_col]
    values = np.empty((len(rows) - 1, len(columns)), dtype=np.float64)
    stamps = np.empty(len(rows) - 1, dtype=np.float64) if time_col is not None else None
    for r, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise ConvertError(
                f"calibration {path}: line {r + 2} has {len(row)} fields, the header {len(header)}"
            )
        c = 0
        for i, field in enumerate(row):
            try:
                number = float(field)
            except ValueError:
                if i == time_col:
                    raise ConvertError(
                        f"calibration {path}: line {r + 2}: time {field!r} is not Unix seconds"
                    ) from None
                raise ConvertError(
                    f"calibration {path}: line {r + 2}: {header[i]} = {field!r} is not a number"
                ) from None
            if i == time_col:
                assert stamps is not None
                stamps[r] = number
            else:
                values[r, c] = number
                c += 1
    return columns, values, stamps


def load_calibration(
    path: Path, features: list[str], targets: list[str], window: int, horizon: int = 0
) -> Calibration:
    """Cut a CSV (or a .npy of windows) into calibration and held-out windows.

    The first 80 % of the windows calibrate int8, the last 20 % measure error
    (with fewer than 10 windows, all are used for both).
    """
    if path.suffix == ".npy":
        windows, target_std = _npy_windows(path, features, targets, window)
        future, period = None, None
    else:
        windows, target_std, future, period = _csv_windows(path, features, targets, window, horizon)
    if not np.isfinite(windows).all():
        raise ConvertError(f"calibration {path}: contains NaN or infinite values; clean them first")
    n = len(windows)
    split = 0 if n < 10 else int(n * 0.8)
    calib, held = (windows, windows) if n < 10 else (windows[:split], windows[split:])
    return Calibration(
        calibrate=_thin(calib),
        evaluate=_thin(held),
        data="calibration",
        target_std=target_std,
        period_s=period,
        evaluate_actual=_thin(future[split:]) if future is not None else None,
    )


def _npy_windows(
    path: Path, features: list[str], targets: list[str], window: int
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Windows from a .npy of ``(n, window, features)``, and the targets' std (target units)
    at the windows' last step when every target is a feature, else None."""
    try:
        windows = np.load(path, allow_pickle=False).astype(np.float64)
    except (OSError, ValueError) as exc:
        raise ConvertError(f"calibration {path}: not a readable .npy array ({exc})") from exc
    if windows.ndim != 3 or windows.shape[1:] != (window, len(features)):
        raise ConvertError(
            f"calibration {path}: array shape {windows.shape} is not "
            f"(n, {window}, {len(features)}) windows"
        )
    t_idx = [features.index(t) for t in targets if t in features]
    target_std = windows[:, -1, t_idx].std(axis=0) if len(t_idx) == len(targets) else None
    return windows, target_std


def _csv_windows(
    path: Path, features: list[str], targets: list[str], window: int, horizon: int
) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray], Optional[float]]:
    """Every window of a CSV's rows; with the targets among its columns, their std (target
    units) and, for ``horizon`` > 0, what followed each window; the median time step in
    seconds if it has a time column (else None)."""
    columns, values, stamps = read_csv(path)
    missing = [f for f in features if f not in columns]
    if missing:
        raise ConvertError(
            f"calibration {path}: no column {', '.join(missing)} "
            f"(it has {', '.join(columns)}); "
            "name the model's features with --features"
        )
    if values.shape[0] < window:
        raise ConvertError(
            f"calibration {path}: {values.shape[0]} rows is fewer than one window of {window}"
        )
    x = values[:, [columns.index(f) for f in features]]
    windows = np.lib.stride_tricks.sliding_window_view(x, window, axis=0).transpose(0, 2, 1)
    target_std = future = None
    if all(t in columns for t in targets):
        y = values[:, [columns.index(t) for t in targets]]
        target_std = y.std(axis=0)
        if horizon > 0:
            future = _futures(y, window, horizon)
    period = None
    if stamps is not None and len(stamps) > 1:
        period = float(np.median(np.diff(stamps)))
    return windows, target_std, future, period


def _futures(y: np.ndarray, window: int, horizon: int) -> np.ndarray:
    """For the window starting at each row, the next ``horizon`` target rows (NaN past the end)."""
    n = len(y) - window + 1
    padded = np.concatenate([y, np.full((horizon, y.shape[1]), np.nan)])
    index = np.arange(n)[:, None] + window + np.arange(horizon)[None, :]
    out: np.ndarray = padded[index]
    return out


def synthetic_windows(
    window: int, features: list[str], norm: dict[str, Norm], n: int = 64
) -> Calibration:
    """Random windows (standard normal in the model's input units) when no data is given."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, window, len(features)))
    if norm:
        mean = np.array([norm[f].mean for f in features])
        std = np.array([norm[f].std for f in features])
        z = z * std + mean
    return Calibration(calibrate=z, evaluate=z, data="synthetic", target_std=None, period_s=None)


def _thin(windows: np.ndarray) -> np.ndarray:
    if len(windows) <= MAX_WINDOWS:
        return np.ascontiguousarray(windows)
    idx = np.linspace(0, len(windows) - 1, MAX_WINDOWS).round().astype(int)
    return np.ascontiguousarray(windows[idx])


def parse_time_features(text: str) -> dict[str, str]:
    """``--time-features "Day sin=day_sin,..."``: model feature name -> computed kind.

    STUB (helper H5 implements it).
    """
    return {}
