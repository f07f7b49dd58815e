"""``bench/RESULTS-convert.md``: machine, method, summary, findings, overview, one table a model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from bench.convert.findings import Answer, findings
from bench.convert.grid import (
    BUDGET,
    CONFIG_TITLES,
    LITERT_CONFIGS,
    N_CALIB,
    N_EVAL,
    N_TRAIN,
    PROJECT_MODES,
    VARIANTS,
)
from bench.convert.overview import overview
from bench.harness.markdown import fmt_ms, fmt_rel, fmt_size, row, table

__all__ = ["best_within_budget", "ort_bar", "render", "rows_for"]

REFERENCES = (
    ("keras_predict", "Keras model.predict"),
    ("tf_function", "tf.function(model)"),
    ("onnx", "ONNX Runtime (as exported: Loop)"),
    ("onnx_unrolled", "ONNX Runtime (unrolled clone)"),
)
RUNTIMES = {"LiteRT": "LiteRT", "tflite-runtime": "tflite-rt 2.14", "reference": "—"}


def best_within_budget(
    point: dict[str, Any], variants: tuple[str, ...], configs: tuple[str, ...]
) -> Optional[tuple[str, str, dict[str, Any]]]:
    """Fastest (variant, config, entry) under LiteRT within the error budget."""
    found = []
    lit = point.get("litert", {})
    for v in variants:
        for c in configs:
            e = lit.get(v, {}).get(c)
            if e and "error" not in e and e["rel_mae"] <= BUDGET:
                found.append((e["ms"], v, c, e))
    if not found:
        return None
    _, v, c, e = min(found, key=lambda f: f[0])
    return v, c, e


def ort_bar(point: dict[str, Any]) -> Optional[tuple[str, float]]:
    """The faster ONNX Runtime route: (label, ms)."""
    ref = point.get("reference", {})
    opts = [
        (k, ref[k]["ms"])
        for k in ("onnx", "onnx_unrolled")
        if isinstance(ref.get(k), dict) and "ms" in ref[k]
    ]
    return min(opts, key=lambda o: o[1]) if opts else None


def rows_for(point: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows: one per (variant, runtime) and one per reference."""
    rows = []
    for variant in VARIANTS:
        conv = point["variants"].get(variant, {})
        for runtime, key in (("LiteRT", "litert"), ("tflite-runtime", "tflite_runtime")):
            res = point.get(key, {})
            ok = isinstance(res, dict) and "error" not in res
            rows.append(
                {
                    "variant": variant,
                    "runtime": runtime,
                    "offered": variant in PROJECT_MODES,
                    "bytes": conv.get("bundle_bytes"),
                    "conv": conv,
                    "configs": (res.get(variant) if ok else None) or {},
                    "runtime_error": res.get("error") if isinstance(res, dict) else None,
                }
            )
    return rows + [_reference_row(point, key, label) for key, label in REFERENCES]


def _reference_row(point: dict[str, Any], key: str, label: str) -> dict[str, Any]:
    ref, prep = point.get("reference", {}), point["prep"]
    entry = ref.get(key)
    size = prep.get("keras_bytes")
    if key.startswith("onnx"):
        path = prep.get(key, {}).get("path")
        size = Path(path).stat().st_size if path and Path(path).exists() else None
        if entry is None and "error" in prep.get(key, {}):
            entry = {"error": prep[key]["error"]}
    if entry is None and "error" in ref:
        entry = {"error": ref["error"]}
    return {
        "variant": label,
        "runtime": "reference",
        "offered": False,
        "bytes": size,
        "conv": {},
        "configs": {"1T": entry} if entry else {},
    }


def _machine(info: dict[str, Any]) -> list[str]:
    return [
        "## Machine\n",
        f"- CPU: {info['cpu']} — {info['cores']} cores ({info['usable_cores']} usable)",
        f"- OS: {info['platform']}",
        f"- Python {info['python']} (`.venv`)",
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()),
        f"- tflite-runtime venv: {info['tflite_env']}",
        f"- Date: {info['date']}",
        f"- sensorcast commit: {info.get('commit', 'unknown')}\n",
    ]


def _method(args: argparse.Namespace) -> list[str]:
    return [
        "## Method\n",
        "- Models: `keras.Sequential([Input((window, 3)), LSTM(units), Dense(12)])`, "
        f"trained **1 epoch** (Adam 1e-3, MSE, batch 32, {N_TRAIN} windows, seeded) on a "
        "synthetic 3-feature series (daily and weekly sine cycles plus noise, period 1 "
        '"hour"), target the next 12 values of feature 0.',
        f"- Calibration for int8: {N_CALIB} windows from a later part of the series; "
        f"errors: {N_EVAL} held-out windows from the end of it, against Keras `predict` of "
        "the saved model. **MAE/std** and **max/std** are the mean and max abs error divided "
        "by the std of the Keras outputs on those windows.",
        "- Variants `float32`, `float16`, `dynamic`, `int8` are what the converter offers, "
        "made by its own code (`sensorcast.convert.quantize.convert_in_child` on "
        "`sensorcast.convert.load.load_source`): float modes keep the LSTM's WHILE loop, int8 "
        "unrolls it (full integer, float I/O). The `*-unrolled` variants are experiments: "
        "the project's `sensorcast.convert._worker.unrolled_clone` (clone_model with "
        "unroll=True, fixed (1, W, 3) input, set_weights), "
        "`model.export(format='tf_saved_model')`, `TFLiteConverter.from_saved_model`, each in "
        "a child process. Sizes are bundle bytes: the .tflite with the sensorcast manifest "
        "embedded (`sensorcast.convert.bundle.embed_manifest`, ~1 KB).",
        "- Latency: mean ms per inference, batch 1, bare `set_tensor`/`invoke`/`get_tensor` "
        f"loop, after a warm-up; the median of {args.rounds} rounds of at least "
        f"{args.budget} s (and 10 calls) each. Every runtime runs in its own process, one at "
        "a time. `noXNN` = `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES` (the default "
        "XNNPACK delegate off). The agent runs bundles like the **LiteRT 1 thread** column "
        "(LiteRT, num_threads=1, XNNPACK on).",
        "- References, one thread each (TF intra/inter-op threads = 1; ORT intra/inter = 1, "
        "sequential): Keras `model.predict(x, verbose=0)` on one window, a `tf.function` of "
        "`model(x, training=False)` with a fixed (1, W, 3) signature, and ONNX Runtime on "
        "the model exported with Keras 3's `model.export(format='onnx')` (tf2onnx underneath; "
        "the LSTM becomes an ONNX `Loop`) and on the unrolled clone exported the same way.",
        f"- Budget of question 4: MAE/std <= {BUDGET:.0%}.\n",
    ]


def _bytes_of(pt: dict[str, Any], variant: str) -> str:
    return fmt_size(pt["variants"][variant].get("bundle_bytes"))


def _summary(points: list[dict[str, Any]]) -> tuple[list[str], list[Answer]]:
    """The summary table, and per point (point, ORT bar, best offered, best of any)."""
    head = [
        "model",
        "ORT Loop ms",
        "ORT unrolled ms",
        "fastest offered mode in budget",
        "ms",
        "bundle bytes",
        "vs ORT bar",
        "fastest of any variant/config in budget",
        "ms",
        "bytes",
    ]
    answers: list[Answer] = []
    rows = []
    for pt in points:
        ref, bar = pt.get("reference", {}), ort_bar(pt)
        offered = best_within_budget(pt, PROJECT_MODES, ("1T",))
        anyv = best_within_budget(pt, VARIANTS, tuple(c[0] for c in LITERT_CONFIGS))
        verdict = "—"
        if offered and bar:
            ratio = bar[1] / offered[2]["ms"]
            fast = offered[2]["ms"] <= bar[1]
            verdict = f"**{ratio:.2f}x faster**" if fast else f"{1 / ratio:.2f}x slower"
        answers.append((pt, bar, offered, anyv))
        rows.append(
            [
                pt["name"],
                fmt_ms(ref.get("onnx")),
                fmt_ms(ref.get("onnx_unrolled")),
                offered[0] if offered else "none",
                fmt_ms(offered[2]) if offered else "—",
                _bytes_of(pt, offered[0]) if offered else "—",
                verdict,
                f"{anyv[0]} {anyv[1]}" if anyv else "none",
                fmt_ms(anyv[2]) if anyv else "—",
                _bytes_of(pt, anyv[0]) if anyv else "—",
            ]
        )
    intro = [
        "## Summary: fastest offered mode vs ONNX Runtime\n",
        "Converter modes under LiteRT as the agent runs them (1 thread, XNNPACK on); "
        f'"within budget" = MAE/std <= {BUDGET:.0%}. ORT bar = the faster of the two '
        "ONNX Runtime routes.\n",
    ]
    return [*intro, *table(head, rows), ""], answers


def _notes(row_: dict[str, Any]) -> list[str]:
    """A per-model row's notes: conversion failures, warnings, errors, differing errors."""
    from sensorcast.convert.verify import BOUNDS

    conv, per, lit = row_["conv"], row_["configs"], row_["runtime"] == "LiteRT"
    notes = []
    if conv.get("error") and lit:
        notes.append(f"conversion failed: {conv['error'][:200]}")
    notes += conv.get("warnings", []) if lit else []
    if row_.get("runtime_error") and "error" not in conv:
        notes.append(row_["runtime_error"][:200])
    first = per.get("1T") or {}
    notes += [
        f"¹ {e[:220]}" for e in sorted({e["error"] for e in per.values() if e and "error" in e})
    ]
    for c, e in per.items():
        if c != "1T" and e and "rel_mae" in e and "rel_mae" in first:
            a, b = e["rel_mae"], first["rel_mae"]
            if abs(a - b) > max(1e-4, 0.1 * max(a, b)):
                notes.append(f"MAE/std {fmt_rel(a)} with {c}")
    if row_["variant"] in PROJECT_MODES and "rel_mae" in first:
        bm, bx = BOUNDS[row_["variant"]]
        if first["rel_mae"] > bm or first["rel_max"] > bx:
            notes.append(
                f"beyond the converter's {row_['variant']} sanity bound "
                f"({bm:.2%} / {bx:.2%}; it judges by the targets' std)"
            )
    return notes


def _point_table(pt: dict[str, Any]) -> list[str]:
    configs = [c[0] for c in LITERT_CONFIGS]
    prep = pt["prep"]
    out = [
        f"### {pt['name']}\n",
        f"{prep['params']:,} parameters; train loss after 1 epoch {prep['train_loss']:.4f}; "
        f"std of Keras outputs {prep['output_std']:.4f}; .keras file "
        f"{prep['keras_bytes']:,} bytes.\n",
        row(
            [
                "variant",
                "runtime",
                "bytes",
                "MAE/std",
                "max/std",
                *(CONFIG_TITLES[c] for c in configs),
                "convert s",
                "notes",
            ]
        ),
        "|---|---|---|---|---|" + "---|" * len(configs) + "---|---|",
    ]
    for r in rows_for(pt):
        per, first = r["configs"], r["configs"].get("1T") or {}
        cs = r["conv"].get("convert_s")
        out.append(
            row(
                [
                    r["variant"] + (" *(offered)*" if r["offered"] else ""),
                    RUNTIMES[r["runtime"]],
                    fmt_size(r["bytes"]),
                    fmt_rel(first.get("rel_mae")),
                    fmt_rel(first.get("rel_max")),
                    *(fmt_ms(per.get(c)) if c in per else "—" for c in configs),
                    f"{cs:.0f}" if cs and r["runtime"] == "LiteRT" else "",
                    "; ".join(dict.fromkeys(_notes(r))),
                ]
            )
        )
    for key in ("onnx", "onnx_unrolled"):
        o = prep.get(key, {})
        if o.get("failed"):
            out.append(f"\nONNX export ({key}): tried and failed first: {'; '.join(o['failed'])}")
    return [*out, ""]


def render(
    info: dict[str, Any],
    points: list[dict[str, Any]],
    phases: dict[str, float],
    args: argparse.Namespace,
    command: str,
) -> str:
    """The whole results file."""
    out = [
        "# Converter benchmark results\n",
        f"Written by `.venv/bin/python {command}` on {info['date']}; the run took "
        f"{phases['total_s'] / 60:.1f} min (training + ONNX export {phases['prep_s']:.0f} s, "
        f"conversions {phases['convert_s']:.0f} s, timing {phases['time_s']:.0f} s).\n",
        *_machine(info),
        *_method(args),
    ]
    summary, answers = _summary(points)
    out += [*summary, "## Findings\n", *findings(points, answers), "", *overview(points)]
    out += [
        "## Per model\n",
        "`1T` etc. are LiteRT/tflite-runtime configurations (see Method); reference rows "
        "have their one-thread latency in the first latency column. Error columns are for "
        "the row's runtime with its default configuration (1 thread, XNNPACK on); notes say "
        "when another configuration's error differs. ¹ = error, see notes.\n",
    ]
    for pt in points:
        out += _point_table(pt)
    return "\n".join(out) + "\n"
