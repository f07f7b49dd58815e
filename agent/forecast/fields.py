"""Checks of the manifest's fields: every number in range, every name known.

A damaged or hostile bundle is refused when it is read, with the field, its value and the
allowed range, before a number can reach the hot path. The functions take the decoded JSON
object and return plain values; :mod:`sensorcast.agent.forecast.manifest` builds the
dataclasses from them.
"""

from __future__ import annotations

import math
from typing import Any

from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.timefeatures import TIME_KINDS

__all__ = [
    "MAX_COLUMNS", "MAX_OPS", "MEASURE_MAX", "RECURRENCES", "Table", "computed", "measure",
    "names", "number", "obj", "ops", "optional", "quantiles", "recurrence", "show", "table",
    "verified_range", "want",
]  # fmt: skip

#: How a bundle runs its recurrence: a fused TFLite op, a WHILE loop, unrolled steps, or none.
RECURRENCES = ("", "fused", "loop", "unrolled", "none")
#: Entries in ``ops`` (an op histogram), at most.
MAX_OPS = 1_000
#: Input features and targets, each.
MAX_COLUMNS = 1_000
#: Accuracy figures (target units) and latency (ms): finite, ``0 .. MEASURE_MAX``.
MEASURE_MAX = 1e30

Table = tuple[tuple[float, ...], ...]  #: Per forecast step (rows) and target (columns).


def show(value: Any) -> str:
    """A value for an error message: short, whatever the manifest put there."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def want(data: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    if key not in data:
        raise ModelError(f"manifest field {where}{key} is missing")
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any double: finite in JSON, not as a float
            raise ModelError(
                f"manifest field {where}{key} = {show(data[key])} is out of range"
            ) from None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ModelError(f"manifest field {where}{key} = {show(value)} must be {kind.__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ModelError(f"manifest field {where}{key} = {show(value)} must be finite")
    return value


def number(
    data: dict[str, Any], key: str, kind: type, low: float, high: float, where: str = ""
) -> Any:
    """``data[key]``, an int or finite float within ``low .. high`` (inclusive)."""
    value = want(data, key, kind, where)
    if not low <= value <= high:
        unit = " s" if key.endswith("_s") else " ms" if key.endswith("_ms") else ""
        raise ModelError(
            f"manifest field {where}{key} = {show(value)} is out of range "
            f"({low:.15g} .. {high:.15g}{unit})"
        )
    return value


def optional(
    data: dict[str, Any], key: str, kind: type, default: Any, low: float, high: float, where: str
) -> Any:
    """Like :func:`_number` for a field older bundles may lack (absent or null: default)."""
    if data.get(key) is None:
        return default
    return number(data, key, kind, low, high, where)


def names(data: dict[str, Any], key: str) -> tuple[str, ...]:
    raw = want(data, key, list)
    if not raw or not all(isinstance(n, str) and n for n in raw):
        raise ModelError(f"manifest field {key} must be a non-empty list of names")
    if len(raw) > MAX_COLUMNS:
        raise ModelError(f"manifest field {key} has {len(raw)} names, more than {MAX_COLUMNS}")
    if len(set(raw)) != len(raw):
        raise ModelError(f"manifest field {key} has duplicate names")
    return tuple(raw)


def measure(raw: dict[str, Any], key: str, where: str) -> float:
    """An optional measured figure: absent or null is 0, else finite in ``0 .. MEASURE_MAX``."""
    value: float = optional(raw, key, float, 0.0, 0.0, MEASURE_MAX, where)
    return value


def obj(raw: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ModelError(f"manifest field {where}{key} must be an object")
    return value


def verified_range(
    data: dict[str, Any], features: tuple[str, ...]
) -> dict[str, tuple[float, float]]:
    out = {}
    for name, pair in obj(data, "verified_range").items():
        where = f"manifest field verified_range.{name}"
        if name not in features:
            raise ModelError(f"{where}: {name!r} is not a feature")
        ok = isinstance(pair, list) and len(pair) == 2
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
        low, high = (float(pair[0]), float(pair[1])) if ok else (math.nan, math.nan)
        if not (-MEASURE_MAX <= low <= high <= MEASURE_MAX):  # nan fails every comparison
            raise ModelError(f"{where} = {show(pair)} must be [low, high], finite, low <= high")
        out[name] = (low, high)
    return out


def computed(data: dict[str, Any], features: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name, kind in obj(data, "computed").items():
        if name not in features:
            raise ModelError(f"manifest field computed.{name}: {name!r} is not a feature")
        if kind not in TIME_KINDS:
            raise ModelError(
                f"manifest field computed.{name} = {show(kind)} is not one of "
                f"{', '.join(TIME_KINDS)}; upgrade sensorcast or reconvert the model"
            )
        out[name] = kind
    return out


def ops(data: dict[str, Any]) -> dict[str, int]:
    raw = obj(data, "ops")
    if len(raw) > MAX_OPS:
        raise ModelError(f"manifest field ops has {len(raw)} entries, more than {MAX_OPS}")
    return {str(name): number(raw, name, int, 0, 2**31, "ops.") for name in raw}


def recurrence(data: dict[str, Any]) -> str:
    value = data.get("recurrence") or ""
    if value not in RECURRENCES:
        raise ModelError(
            f"manifest field recurrence = {show(value)} is not one of "
            f"{', '.join(r for r in RECURRENCES if r)}"
        )
    return str(value)


def table(raw: Any, horizon: int, targets: int, key: str, low: float = 0.0) -> Table:
    """``accuracy.<key>``: ``horizon`` rows of ``targets`` finite numbers in
    ``low .. MEASURE_MAX``, or empty."""
    if raw is None or raw == []:
        return ()
    try:
        rows = tuple(tuple(float(v) for v in row) for row in raw)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ModelError(f"manifest accuracy.{key}: not a table of numbers ({exc})") from exc
    if len(rows) != horizon or any(len(r) != targets for r in rows):
        raise ModelError(f"manifest accuracy.{key}: want {horizon} steps x {targets} targets")
    bad = next((v for r in rows for v in r if not (low <= v <= MEASURE_MAX)), None)
    if bad is not None:  # nan fails every comparison, so it lands here too
        raise ModelError(
            f"manifest accuracy.{key}: {show(bad)} is out of range ({low:g} .. {MEASURE_MAX:g})"
        )
    return rows


def quantiles(raw: dict[str, Any], horizon: int, targets: int) -> dict[str, Table]:
    """``accuracy.residual_quantiles``: probability (a string in (0, 1)) -> signed table."""
    out = {}
    for name, rows in raw.items():
        try:
            p = float(name)
        except ValueError:
            p = math.nan
        if not 0.0 < p < 1.0:  # nan fails it too
            raise ModelError(
                f"manifest accuracy.residual_quantiles.{name}: not a probability in (0, 1)"
            )
        out[name] = table(rows, horizon, targets, f"residual_quantiles.{name}", -MEASURE_MAX)
    return out
