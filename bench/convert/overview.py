"""The cross-grid tables: LiteRT latency (XNNPACK on and off), error, size, memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bench.convert.grid import VARIANTS
from bench.harness.markdown import fmt_ms, fmt_rel, fmt_size, row

__all__ = ["SHORT", "overview"]

SHORT = {
    "float32": "float32",
    "float16": "float16",
    "dynamic": "dynamic",
    "int8": "int8",
    "float32-unrolled": "f32 unrolled",
    "float16-unrolled": "f16 unrolled",
    "dynamic-unrolled": "dyn unrolled",
}

Point = dict[str, Any]


def _grid_table(
    points: list[Point], intro: str, extra: list[str], cells: Callable[[Point], list[str]]
) -> list[str]:
    """One row per point, one column per variant and then the ``extra`` columns."""
    head = ["model", *(SHORT[v] for v in VARIANTS), *extra]
    out = [intro, row(head), "|" + "---|" * len(head)]
    return [*out, *(row([pt["name"], *cells(pt)]) for pt in points), ""]


def _latency(pt: Point) -> list[str]:
    lit, ref = pt.get("litert", {}), pt.get("reference", {})
    cells = [fmt_ms(lit.get(v, {}).get("1T")) for v in VARIANTS]
    return (
        cells
        + [fmt_ms(ref.get(k)) for k in ("onnx", "onnx_unrolled", "tf_function")]
        + [fmt_ms(ref.get("keras_predict"))]
    )


def _no_xnnpack(pt: Point) -> list[str]:
    return [fmt_ms(pt.get("litert", {}).get(v, {}).get("1T-noXNN")) for v in VARIANTS]


def _error(pt: Point) -> list[str]:
    lit = pt.get("litert", {})
    return [fmt_rel(lit.get(v, {}).get("1T", {}).get("rel_mae")) for v in VARIANTS]


def _size(pt: Point) -> list[str]:
    cells = []
    for v in VARIANTS:
        c = pt["variants"].get(v, {})
        b = fmt_size(c.get("bundle_bytes"))
        if c.get("short_names_bytes") and c["short_names_bytes"] < 0.9 * c["tflite_bytes"]:
            b += f" ({c['short_names_bytes']:,})"
        cells.append(b)
    for key in ("onnx", "onnx_unrolled"):
        path = pt["prep"].get(key, {}).get("path")
        ok = path and Path(path).exists()
        cells.append(fmt_size(Path(path).stat().st_size) if ok else "—")
    return cells


def _memory(pt: Point) -> list[str]:
    cells = []
    for v in VARIANTS:
        m = pt.get("memory", {}).get(v, {})
        on, off = m.get("XNNPACK"), m.get("noXNN")
        both = isinstance(on, int) and isinstance(off, int)
        cells.append(f"{on / 1024:.1f} / {off / 1024:.1f}" if both else "—")
    return cells


def overview(points: list[Point]) -> list[str]:
    """Cross-grid tables: LiteRT latency, MAE, bundle size and memory per variant."""
    return [
        "## Overview across the grid\n",
        *_grid_table(
            points,
            "LiteRT, 1 thread, XNNPACK on (as the agent runs bundles), ms per inference; "
            "references at 1 thread. Offered modes are the first four columns.\n",
            ["ORT Loop", "ORT unrolled", "tf.function", "Keras predict"],
            _latency,
        ),
        *_grid_table(
            points,
            "Same, with XNNPACK off (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`), ms:\n",
            [],
            _no_xnnpack,
        ),
        *_grid_table(points, "MAE/std against Keras (LiteRT, 1 thread, XNNPACK on):\n", [], _error),
        *_grid_table(
            points,
            "Bundle bytes (.tflite + manifest); in brackets the .tflite's size if its tensor "
            "names were shortened to `t<i>` (computed, not timed); ONNX file bytes:\n",
            ["ONNX Loop", "ONNX unrolled"],
            _size,
        ),
        *_grid_table(
            points,
            "Memory: growth of the process's RSS from creating the LiteRT interpreter to after "
            "its first invoke, MB, XNNPACK on / off (one fresh process per cell):\n",
            [],
            _memory,
        ),
    ]
