"""Markdown tables and the number formats the results files use."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Optional

__all__ = ["fmt_ms", "fmt_rel", "fmt_size", "fr", "mb", "ratio", "row", "table", "us"]

#: A timing as :func:`bench.harness.timing.interleaved` returns it, or an error, or nothing.
Timing = Optional[dict[str, Any]]


def row(cells: Iterable[object]) -> str:
    """One table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(head: Sequence[str], rows: Iterable[Iterable[object]]) -> list[str]:
    """A table's lines: the head, the rule, the rows."""
    return [row(head), "|" + "---|" * len(head), *(row(r) for r in rows)]


def us(d: Timing, scale: float = 1.0, unit: str = "") -> str:
    """``median (min-max)`` of a timing in µs, its error, or ``-``."""
    if not d or "us" not in d:
        return str(d.get("error", "-")) if isinstance(d, dict) else "-"
    return f"{d['us'] * scale:.1f}{unit} ({d['min'] * scale:.1f}-{d['max'] * scale:.1f})"


def ratio(a: Timing, b: Timing, key: str = "us") -> Optional[float]:
    """``a[key] / b[key]`` (wall ``us`` or ``cpu_us``), or None when either is missing."""
    if not a or not b or not a.get(key) or not b.get(key):
        return None
    return float(a[key]) / float(b[key])


def mb(x: Optional[float]) -> str:
    """MB with one decimal, or ``-``."""
    return "-" if x is None else f"{x:.1f}"


def fr(x: Optional[float], fmt: str = "{:.2f}x") -> str:
    """A ratio (``1.25x``), or ``-``."""
    return "-" if x is None else fmt.format(x)


def fmt_ms(entry: Optional[dict[str, Any]]) -> str:
    """Milliseconds of a budget timing (``ms``), ``error¹`` or ``—``."""
    if not entry:
        return "—"
    if "error" in entry:
        return "error¹"
    ms = float(entry["ms"])
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def fmt_rel(value: Optional[float]) -> str:
    """A fraction as a percentage with two significant digits, or ``—``."""
    if value is None or math.isnan(value):
        return "—"
    if value == 0:
        return "0"
    return f"{100 * value:.2g} %"


def fmt_size(n: Optional[int]) -> str:
    """Bytes with thousands separators, or ``—``."""
    return f"{n:,}" if n else "—"
