"""Read calibration data and normalization, and cut them into model windows."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from sensorcast.agent.forecast.manifest import Norm
from sensorcast.agent.forecast.timefeatures import TIME_KINDS, TIME_PERIODS_S, time_features
from sensorcast.convert import ConvertError

__all__ = [
    "TIME_COLUMNS",
    "Calibration",
    "computed_columns",
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
    path: Path,
    features: list[str],
    targets: list[str],
    window: int,
    horizon: int = 0,
    computed: Optional[dict[str, str]] = None,
) -> Calibration:
    """Cut a CSV (or a .npy of windows) into calibration and held-out windows.

    The first 80 % of the windows calibrate int8, the last 20 % measure error
    (with fewer than 10 windows, all are used for both). ``computed`` (feature -> kind of
    :data:`~sensorcast.agent.forecast.timefeatures.TIME_KINDS`) features need no CSV column:
    they are computed from each row's timestamp, taken as its slot's start, as the agent
    computes them (a .npy holds whole windows, computed columns included).
    """
    computed = computed or {}
    if path.suffix == ".npy":
        windows, target_std = _npy_windows(path, features, targets, window)
        future, period = None, None
    else:
        windows, target_std, future, period = _csv_windows(
            path, features, targets, (window, horizon), computed
        )
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
    path: Path,
    features: list[str],
    targets: list[str],
    shape: tuple[int, int],
    computed: dict[str, str],
) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray], Optional[float]]:
    """Every window (``shape``: window, horizon) of a CSV's rows; with the targets among its
    columns, their std (target units) and, for horizon > 0, what followed each window; the
    median time step in seconds if it has a time column (else None)."""
    window, horizon = shape
    columns, values, stamps = read_csv(path)
    missing = [f for f in features if f not in columns and f not in computed]
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
    x = computed_columns(f"calibration {path}", features, computed, columns, values, stamps)
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


def computed_columns(
    where: str,
    features: list[str],
    computed: dict[str, str],
    columns: list[str],
    values: np.ndarray,
    stamps: Optional[np.ndarray],
) -> np.ndarray:
    """The ``features`` columns of a CSV's ``values`` (rows, columns), each ``computed``
    feature (feature -> kind) computed from the rows' ``stamps`` (Unix seconds, each row's
    slot start), as the agent computes it: a CSV column of the same name is not used.

    Raises :class:`ConvertError` (prefixed ``where``) if a computed feature is not a
    feature, or the CSV has no time column to compute them from.
    """
    stray = [name for name in computed if name not in features]
    if stray:
        raise ConvertError(
            f"{where}: computed time feature {', '.join(stray)} is not among the model's "
            f"features ({', '.join(features)}); list it in --features"
        )
    if computed and stamps is None:
        raise ConvertError(
            f"{where}: computed time features ({', '.join(computed)}) are computed from each "
            f"row's time: add a column {TIME_COLUMNS[0]} (Unix seconds, the start of the row's "
            "period)"
        )
    x = np.empty((len(values), len(features)), dtype=np.float64)
    for i, name in enumerate(features):
        if name in computed:
            assert stamps is not None
            x[:, i] = time_features(computed[name], stamps)
        else:
            x[:, i] = values[:, columns.index(name)]
    return x


def _futures(y: np.ndarray, window: int, horizon: int) -> np.ndarray:
    """For the window starting at each row, the next ``horizon`` target rows (NaN past the end)."""
    n = len(y) - window + 1
    padded = np.concatenate([y, np.full((horizon, y.shape[1]), np.nan)])
    index = np.arange(n)[:, None] + window + np.arange(horizon)[None, :]
    out: np.ndarray = padded[index]
    return out


def synthetic_windows(
    window: int,
    features: list[str],
    norm: dict[str, Norm],
    n: int = 64,
    computed: Optional[dict[str, str]] = None,
    period_s: Optional[float] = None,
) -> Calibration:
    """Random windows (standard normal in the model's input units) when no data is given.

    ``computed`` features (feature -> kind) are computed on a time axis instead: each
    window starts at a random time within 2020-2030 and steps ``period_s`` seconds (needed
    when there are computed features), so they are what the agent would feed.
    """
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, window, len(features)))
    if norm:
        mean = np.array([norm[f].mean for f in features])
        std = np.array([norm[f].std for f in features])
        z = z * std + mean
    if computed:
        if period_s is None or not period_s > 0:
            raise ConvertError(
                "--period SECONDS is required: computed time features need the sampling "
                "period to build synthetic windows (or pass --calibration DATA.csv)"
            )
        start = rng.uniform(1577836800.0, 1893456000.0, n)  # 2020-01-01 .. 2030-01-01
        slots = np.floor(start / period_s)[:, None] + np.arange(window)[None, :]
        for name, kind in computed.items():
            z[:, :, features.index(name)] = time_features(kind, slots * period_s)
    return Calibration(calibrate=z, evaluate=z, data="synthetic", target_std=None, period_s=None)


def _thin(windows: np.ndarray) -> np.ndarray:
    if len(windows) <= MAX_WINDOWS:
        return np.ascontiguousarray(windows)
    idx = np.linspace(0, len(windows) - 1, MAX_WINDOWS).round().astype(int)
    return np.ascontiguousarray(windows[idx])


def parse_time_features(text: str, flag: str = "--time-features") -> dict[str, str]:
    """``--time-features "Day sin=day_sin,Day cos=day_cos"``: model feature name -> kind.

    Each comma-separated entry is ``NAME=KIND`` (a model input named NAME is computed as
    KIND), a bare ``KIND`` (``day_sin``: the feature is named after its kind), or a bare
    cycle (``day``, ``week``, ``year``: its ``_sin`` and ``_cos`` kinds). Raises
    :class:`ConvertError` naming the entry and listing the kinds.
    """
    kinds = f"kinds are {', '.join(TIME_KINDS)} (or a cycle: {', '.join(TIME_PERIODS_S)})"
    out: dict[str, str] = {}
    for entry in text.split(","):
        for name, kind in _time_entry(entry.strip()):
            if name and kind not in TIME_KINDS:
                raise ConvertError(f"{flag} {entry.strip()!r}: no kind {kind!r}; {kinds}")
            if not name:
                raise ConvertError(
                    f"{flag} {entry.strip()!r}: give NAME=KIND pairs, comma-separated; {kinds}"
                )
            if name in out:
                raise ConvertError(f"{flag}: feature {name!r} is given twice")
            if kind in out.values():
                raise ConvertError(f"{flag}: kind {kind} is given twice; {kinds}")
            out[name] = kind
    return out


def _time_entry(entry: str) -> list[tuple[str, str]]:
    """One ``--time-features`` entry as (name, kind) pairs (an empty name if malformed)."""
    if "=" in entry:
        name, _, kind = entry.partition("=")
        return [(name.strip(), kind.strip())]
    if entry in TIME_PERIODS_S:
        return [(f"{entry}_{fn}", f"{entry}_{fn}") for fn in ("sin", "cos")]
    return [(entry, entry)] if entry in TIME_KINDS else [("", entry)]
