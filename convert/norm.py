"""Normalization the way users trained: read ``--norm`` JSON, and ``sensorcast norm``.

A bundle stores one affine map per column, ``z = (x - mean) / std`` (features before the
model, targets undone after it). Every scaler users train with is such a map, so it is
translated exactly, never approximated:

- ``{"mean": m, "std": s}``: as it is (``sensorcast train``, scikit-learn's StandardScaler);
- ``{"min": a, "max": b}`` and optionally ``"feature_range": [lo, hi]`` (scikit-learn's
  MinMaxScaler, default ``[0, 1]``): ``z = lo + (x - a) * (hi - lo) / (b - a)``, which is
  ``std = (b - a) / (hi - lo)`` and ``mean = a - lo * std``.

``sensorcast norm`` writes that JSON from a CSV's training rows (the first 70 %, as
``sensorcast train`` splits) or from a fitted scikit-learn scaler saved with pickle or
joblib. It needs neither TensorFlow nor scikit-learn itself (a scaler file needs the
scikit-learn that saved it to unpickle).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pickle
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import numpy as np
from sensorcast.agent.forecast.manifest import NORM_LIMIT, Norm
from sensorcast.convert import ConvertError, run_command
from sensorcast.convert.calibrate import read_csv

__all__ = ["from_csv", "from_scaler", "main", "minmax_norm", "read_norm"]

STANDARD_KEYS = ("mean", "std")
MINMAX_KEYS = ("min", "max", "feature_range")
#: The scikit-learn scalers ``--scaler`` reads; both are exactly ``(x - mean) / std``.
SCALERS = ("StandardScaler", "MinMaxScaler")
FORMS = '{"<column>": {"mean": m, "std": s}} or {"<column>": {"min": a, "max": b}}'


def read_norm(path: Path, needed: list[str]) -> dict[str, Norm]:
    """Read ``--norm`` JSON (mean/std or min/max entries) and check it covers ``needed``.

    Returns each needed column's ``Norm`` in the column's own units.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConvertError(f"norm {path}: file not found") from exc
    except (OSError, ValueError) as exc:
        raise ConvertError(f"norm {path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConvertError(f"norm {path}: expected {FORMS}")
    norm = {}
    for name in needed:
        entry = data.get(name)
        if not isinstance(entry, dict):
            raise ConvertError(f"norm {path}: no entry for column {name!r}")
        norm[name] = _entry(entry, f"norm {path}: {name}")
    return norm


def _entry(entry: dict[str, Any], where: str) -> Norm:
    """One column's entry; ``where`` starts every error line (``norm FILE: COLUMN``)."""
    standard = [k for k in STANDARD_KEYS if k in entry]
    minmax = [k for k in MINMAX_KEYS if k in entry]
    if standard and minmax:
        raise ConvertError(
            f"{where} mixes {'/'.join(standard)} with {'/'.join(minmax)}; give one kind: "
            '{"mean": m, "std": s} or {"min": a, "max": b}'
        )
    if not minmax:
        try:
            mean, std = float(entry["mean"]), float(entry["std"])
        except (KeyError, TypeError, ValueError):
            raise ConvertError(f"{where} needs numeric mean and std") from None
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ConvertError(f"{where} needs a finite mean and a std > 0")
        return _checked(Norm(mean=mean, std=std), where)
    try:
        low, high = float(entry["min"]), float(entry["max"])
    except (KeyError, TypeError, ValueError):
        raise ConvertError(
            f"{where} needs numeric min and max (the training rows' minimum and maximum, "
            "MinMaxScaler's data_min_ and data_max_)"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConvertError(f"{where} needs a finite min and max")
    if not high > low:
        raise ConvertError(
            f"{where}: max {high:g} must be above min {low:g}; give the training rows' "
            "minimum and maximum (a constant column needs no scaling: use mean 0, std 1)"
        )
    return _checked(minmax_norm(low, high, _feature_range(entry, where)), where)


def _feature_range(entry: dict[str, Any], where: str) -> tuple[float, float]:
    value = entry.get("feature_range", [0.0, 1.0])
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ConvertError(
            f"{where}: feature_range {json.dumps(value)} must be [low, high] with low < high "
            "(MinMaxScaler's feature_range; its default is [0, 1])"
        )
    return lo, hi


def minmax_norm(low: float, high: float, feature_range: tuple[float, float] = (0, 1)) -> Norm:
    """MinMaxScaler's map as ``(x - mean) / std``: ``low`` -> ``feature_range[0]``, ``high``
    -> ``feature_range[1]`` (column units). A constant column (``high == low``) gets
    scikit-learn's range of 1, so it maps to ``feature_range[0]``."""
    lo, hi = feature_range
    span = high - low if high > low else 1.0
    std = span / (hi - lo)
    return Norm(mean=low - lo * std, std=std)


def _checked(norm: Norm, where: str) -> Norm:
    """The limits every bundle's manifest holds (so normalizing stays inside float32)."""
    if not (
        math.isfinite(norm.mean)
        and abs(norm.mean) <= NORM_LIMIT
        and 1 / NORM_LIMIT <= norm.std <= NORM_LIMIT
    ):
        raise ConvertError(
            f"{where} gives mean {norm.mean:g}, std {norm.std:g}: a bundle needs "
            f"|mean| <= {NORM_LIMIT:g} and std {1 / NORM_LIMIT:g}..{NORM_LIMIT:g}; "
            "check the numbers (units?)"
        )
    return norm


# ---- sensorcast norm -------------------------------------------------------------------------


def from_csv(
    path: Path,
    columns: Optional[list[str]],
    kind: str = "standard",
    fraction: float = 0.7,
    feature_range: tuple[float, float] = (0.0, 1.0),
) -> tuple[dict[str, Norm], int]:
    """Each column's normalization from the first ``fraction`` of the CSV's rows.

    ``kind`` is ``standard`` (mean and population std, as ``sensorcast train``) or
    ``minmax`` (MinMaxScaler to ``feature_range``). Returns the norms and the number of
    training rows. 0.7 gives exactly ``sensorcast train``'s training rows.
    """
    names, values, _ = read_csv(path)
    columns = columns or names
    missing = [c for c in columns if c not in names]
    if missing:
        raise ConvertError(
            f"{path}: no column {', '.join(missing)} (it has {', '.join(names)}); check --columns"
        )
    if not 0 < fraction <= 1:
        raise ConvertError(f"--train-fraction {fraction:g}: give a fraction in (0, 1]")
    # The way dataset.py splits (n * 7 // 10), in exact arithmetic: 0.7 * n in floats is
    # sometimes a hair under an integer and would drop a row.
    rows = int(len(values) * Fraction(str(fraction)))
    if rows < 2:
        raise ConvertError(f"{path}: {rows} training rows; it needs at least 2")
    x = values[:rows, [names.index(c) for c in columns]]
    if not np.isfinite(x).all():
        raise ConvertError(f"{path}: contains empty, NaN or infinite values; clean them first")
    out = {}
    for i, name in enumerate(columns):
        col = x[:, i]
        if kind == "minmax":
            norm = minmax_norm(float(col.min()), float(col.max()), feature_range)
        else:
            std = float(col.std())  # population std, as sensorcast train (dataset.py)
            norm = Norm(mean=float(col.mean()), std=std if std > 0 else 1.0)
        out[name] = _checked(norm, f"{path}: {name}")
    return out, rows


def load_scaler(path: Path) -> Any:
    """Unpickle ``path`` (joblib if it is installed, else pickle). This runs code from the
    file: only for the user's own file, at build time."""
    if not path.is_file():
        raise ConvertError(f"--scaler {path}: file not found")
    try:
        load = importlib.import_module("joblib").load
    except ImportError:
        load = None
    try:
        if load is not None:
            return load(path)
        with path.open("rb") as fh:
            return pickle.load(fh)
    except ModuleNotFoundError as exc:
        raise ConvertError(
            f"--scaler {path}: loading it needs the module {exc.name!r}; install the "
            "scikit-learn that saved it (pip install scikit-learn)"
        ) from exc
    except Exception as exc:  # unpickling can raise anything
        raise ConvertError(
            f"--scaler {path}: not a scaler saved with pickle.dump or joblib.dump "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def from_scaler(path: Path, columns: Optional[list[str]]) -> tuple[dict[str, Norm], str, list[str]]:
    """Each column's normalization from a fitted StandardScaler or MinMaxScaler file.

    Column names come from the scaler's ``feature_names_in_`` (fitted on a DataFrame;
    ``columns`` then picks some of them) or else from ``columns``, one per feature in
    order. Returns the norms, the scaler's class name and notes for the user (what the
    scaler's settings change).
    """
    scaler = load_scaler(path)
    kind = _scaler_kind(scaler, path)
    if not hasattr(scaler, "n_features_in_"):
        raise ConvertError(f"--scaler {path}: the {kind} is not fitted; fit it, then save it")
    names = _scaler_columns(scaler, path, columns)
    if kind == "StandardScaler":
        mean, std, notes = _standard(scaler)
    else:
        mean, std, notes = _minmax(scaler)
    out = {}
    for name in columns or names:
        i = names.index(name)
        norm = Norm(mean=float(mean[i]), std=float(std[i]))
        out[name] = _checked(norm, f"--scaler {path}: {name}")
    return out, kind, notes


def _scaler_kind(scaler: Any, path: Path) -> str:
    for cls in type(scaler).__mro__:
        if cls.__module__.startswith("sklearn.preprocessing") and cls.__name__ in SCALERS:
            return cls.__name__
    what = f"{type(scaler).__name__} (from {type(scaler).__module__})"
    hint = ""
    if hasattr(scaler, "named_steps") or hasattr(scaler, "transformers_"):
        hint = "; save the scaler step itself (joblib.dump(pipeline.named_steps['scaler'], ...))"
    raise ConvertError(
        f"--scaler {path}: a {what}; supported: a fitted scikit-learn StandardScaler or "
        f"MinMaxScaler{hint}"
    )


def _scaler_columns(scaler: Any, path: Path, columns: Optional[list[str]]) -> list[str]:
    """The scaler's column names in order (checked against ``columns``)."""
    count = int(scaler.n_features_in_)
    fitted = getattr(scaler, "feature_names_in_", None)
    if fitted is not None:
        names = [str(n) for n in fitted]
        unknown = [c for c in columns or [] if c not in names]
        if unknown:
            raise ConvertError(
                f"--scaler {path}: it was fitted on {', '.join(names)}, not on "
                f"{', '.join(unknown)}; check --columns (or leave it out to take all)"
            )
        return names
    if columns is None or len(columns) != count:
        given = f"{len(columns)} --columns" if columns else "no --columns"
        raise ConvertError(
            f"--scaler {path}: it was fitted on {count} unnamed column(s) and got {given}; "
            f"name them in the order it was fitted with --columns (one name per column)"
        )
    return columns


def _standard(scaler: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """StandardScaler: ``(x - mean_) / scale_``, minus what with_mean/with_std switch off."""
    n = int(scaler.n_features_in_)
    notes = []
    mean = np.zeros(n)
    if scaler.with_mean:
        mean = np.asarray(scaler.mean_, dtype=np.float64)
    else:
        notes.append("with_mean=False: the scaler does not center, so mean is 0")
    std = np.ones(n)
    if scaler.with_std:
        std = np.asarray(scaler.scale_, dtype=np.float64)
    else:
        notes.append("with_std=False: the scaler does not scale, so std is 1")
    return mean, std, notes


def _minmax(scaler: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """MinMaxScaler: ``x * scale_ + min_`` (what its transform computes, a constant column
    included), so ``std = 1 / scale_`` and ``mean = -min_ / scale_``."""
    scale = np.asarray(scaler.scale_, dtype=np.float64)
    notes = []
    if getattr(scaler, "clip", False):
        notes.append(
            "clip=True: the agent does not clip inputs to feature_range; a reading beyond "
            "the training range reaches the model as it is"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.asarray(scaler.min_, dtype=np.float64) / scale, 1.0 / scale, notes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensorcast norm",
        description="Write the normalization JSON for `sensorcast convert --norm`: from a "
        "CSV's training rows (the first 70 percent, as `sensorcast train` splits) or from fitted "
        "scikit-learn StandardScaler or MinMaxScaler files saved with pickle.dump or "
        "joblib.dump. LOADING A SCALER FILE RUNS CODE FROM IT: only your own file, at build "
        "time; never load one you did not make.",
    )
    p.add_argument("data", type=Path, nargs="?", help="CSV with a header (a ts column is skipped)")
    p.add_argument("--scaler", type=Path, action="append", help="fitted scaler file instead "
                   "of a CSV (repeat for separate feature and target scalers)")  # fmt: skip
    p.add_argument("--columns", action="append", help="comma-separated columns. CSV: default "
                   "all. Scaler: default its feature_names_in_; without those, one name per "
                   "fitted column in order; one --columns per --scaler")  # fmt: skip
    p.add_argument("--kind", choices=("standard", "minmax"), default="standard",
                   help="CSV: mean/std (default, as sensorcast train) or min/max")  # fmt: skip
    p.add_argument("--feature-range", nargs=2, type=float, default=[0.0, 1.0],
                   metavar=("LO", "HI"), help="CSV, --kind minmax: the scaled range "
                   "(MinMaxScaler's feature_range, default 0 1)")  # fmt: skip
    p.add_argument("--train-fraction", type=float, default=0.7,
                   help="CSV: leading fraction of rows used (default 0.7, as train)")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, required=True, help="norm JSON to write")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    return run_command("norm", _parser(), write_norm, argv)


def write_norm(args: argparse.Namespace) -> Path:
    """``sensorcast norm``: compute, write ``args.output``, print it and the next command."""
    columns = [_names(text) for text in args.columns or []]
    if (args.data is None) == (args.scaler is None):
        raise ConvertError("give a CSV or --scaler FILE (one of them)")
    if args.scaler is not None:
        norm, sources, notes = _from_scalers(args.scaler, columns)
    else:
        if len(columns) > 1:
            raise ConvertError("a CSV takes one --columns list")
        norm, rows = from_csv(args.data, columns[0] if columns else None, args.kind,
                              args.train_fraction, _range_arg(*args.feature_range))  # fmt: skip
        split = " (sensorcast train's training rows)" if args.train_fraction == 0.7 else ""
        sources, notes = [f"{args.kind}, rows 0-{rows - 1} of {args.data}{split}"], []
    body = {name: {"mean": n.mean, "std": n.std} for name, n in norm.items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    lines = [f"wrote {args.output} from {'; '.join(sources)}:"]
    lines += [f"  {name}: mean {n.mean:.6g}, std {n.std:.6g}" for name, n in norm.items()]
    lines += [f"  note: {note}" for note in notes]
    lines.append(f"next: sensorcast convert MODEL -o MODEL.tflite --norm {args.output} "
                 "--features ... --targets ...")  # fmt: skip
    print("\n".join(lines))
    out: Path = args.output
    return out


def _from_scalers(
    paths: list[Path], columns: list[list[str]]
) -> tuple[dict[str, Norm], list[str], list[str]]:
    """Several scaler files (e.g. one for the features, one for the target) into one norm;
    a column two of them cover must get the same numbers from both."""
    if columns and len(columns) != len(paths):
        raise ConvertError(
            f"{len(paths)} --scaler and {len(columns)} --columns: give one --columns per "
            "--scaler, in the same order (or none, for scalers fitted on a DataFrame)"
        )
    norm: dict[str, Norm] = {}
    sources, notes = [], []
    for i, path in enumerate(paths):
        part, kind, more = from_scaler(path, columns[i] if columns else None)
        for name, n in part.items():
            if norm.get(name, n) != n:
                raise ConvertError(
                    f"--scaler {path}: {name} is scaled differently by an earlier --scaler; "
                    "a column has one normalization in a bundle (for features and targets)"
                )
        norm.update(part)
        sources.append(f"the {kind} in {path}")
        notes += [f"{path}: {note}" for note in more]
    return norm, sources, notes


def _names(text: str) -> list[str]:
    out = [n.strip() for n in text.split(",") if n.strip()]
    if not out or len(set(out)) != len(out):
        raise ConvertError(f"--columns {text!r}: give distinct comma-separated column names")
    return out


def _range_arg(lo: float, hi: float) -> tuple[float, float]:
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ConvertError(f"--feature-range {lo:g} {hi:g}: give LO HI with LO < HI (e.g. -1 1)")
    return lo, hi
