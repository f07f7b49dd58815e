"""``sensorcast convert``: Keras model -> verified, self-describing TFLite bundle."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from agent import __version__
from agent.manifest import Accuracy, Manifest, Norm, TensorQuant
from agent.runtime import load_runtime
from convert import ConvertError, run_command
from convert.bundle import embed_manifest, write_atomic
from convert.calibrate import Calibration, load_calibration, read_csv, read_norm, synthetic_windows
from convert.load import KNOWN_LAYERS, ModelShape, SourceModel, file_sha256, load_source
from convert.quantize import MODES, convert_in_child
from convert.report import DEFAULT_MAX_ERROR_FRACTION, Candidate, Report, choose
from convert.verify import BOUNDS, measure, reference_forecast, within_bound

__all__ = ["main", "mode_warnings", "tensor_types"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensorcast convert",
        description="Convert a Keras model into a TFLite bundle that carries its manifest, "
        "after checking the converted model against Keras.",
    )
    p.add_argument("model", type=Path, help="Keras 3 .keras, legacy .h5, or a SavedModel directory")
    p.add_argument("-o", "--output", type=Path, required=True, help="bundle to write (.tflite)")
    p.add_argument(
        "--quantize",
        choices=(*MODES, "auto"),
        default="float32",
        help="quantization mode; auto tries every mode and keeps the smallest within --max-error",
    )
    p.add_argument(
        "--max-error",
        type=float,
        help="largest MAE against Keras to accept, in target units (auto default: "
        f"{DEFAULT_MAX_ERROR_FRACTION:.0%} of the targets' std)",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        help="CSV with a header naming the features (or .npy of windows); int8 needs it",
    )
    p.add_argument("--features", help="the model's input features in order, comma-separated")
    p.add_argument(
        "--targets", help="the model's output targets in order (default: first features)"
    )
    p.add_argument("--period", type=float, help="sampling period the model was trained on, seconds")
    p.add_argument("--norm", type=Path, help='JSON {"<column>": {"mean": m, "std": s}, ...}')
    p.add_argument(
        "--int8-io", action="store_true", help="int8: make the input and output tensors int8 too"
    )
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="also add a signature that forecasts N windows in one call, for streams that "
        "share the model (float modes of Keras models)",
    )
    p.add_argument("--report", type=Path, help="write the report as JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    return run_command("convert", _parser(), convert_model, argv)


def _names(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise ConvertError(f"names {text!r}: give distinct comma-separated names")
    return names


def convert_model(args: argparse.Namespace) -> Path:
    """Do the whole conversion; returns the bundle's path."""
    started = time.monotonic()
    if args.int8_io and args.quantize not in ("int8", "auto"):
        raise ConvertError("--int8-io only applies to --quantize int8 or auto")
    if not 1 <= args.batch <= 4096:
        raise ConvertError("--batch must be between 1 and 4096")
    if args.max_error is not None and not args.max_error > 0:
        raise ConvertError("--max-error must be a positive number in target units")
    source = load_source(args.model)
    shape = source.shape
    for name, cls in source.layers:
        if cls not in KNOWN_LAYERS:
            logger.info("note: layer %r (%s) is not among the layers sensorcast tests", name, cls)
    features = _resolve_features(_names(args.features), args.calibration, shape)
    targets = _resolve_targets(_names(args.targets), features, shape)
    norm: dict[str, Norm] = {}
    if args.norm is not None:
        norm = read_norm(args.norm, list(dict.fromkeys([*features, *targets])))

    if args.calibration is not None:
        data = load_calibration(args.calibration, features, targets, shape.window, shape.horizon)
    else:
        if args.quantize == "int8":
            raise ConvertError(
                "int8 needs calibration data: pass --calibration DATA.csv with the model's features"
            )
        logger.info("no --calibration: checking the conversion on synthetic windows")
        data = synthetic_windows(shape.window, features, norm)
    period = args.period if args.period is not None else data.period_s
    if period is None or not period > 0:
        raise ConvertError(
            "--period SECONDS is required: the sampling period the model was trained on"
        )

    draft = Manifest(
        window=shape.window,
        features=tuple(features),
        targets=tuple(targets),
        horizon=shape.horizon,
        period_s=float(period),
        quantization="float32",
        batch=args.batch,
        normalization=norm,
        source_sha256=file_sha256(args.model),
        source_name=args.model.name,
        versions=_versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    expected = reference_forecast(source, data.evaluate, draft)
    target_std = _target_scale(data, draft, expected)
    scale = float(np.mean(target_std))
    auto = args.quantize == "auto"
    modes = MODES if auto else (args.quantize,)
    max_error = args.max_error
    if auto and max_error is None:
        max_error = DEFAULT_MAX_ERROR_FRACTION * scale
    progress = not args.quiet
    logger.info("converting %s to %s, each in a child process", args.model.name, ", ".join(modes))
    converted = _convert_all(source, modes, draft, data, args.int8_io, progress, args.batch)
    # Measured one after the other, so latencies do not compete for the CPU.
    candidates = [
        _measure_mode(converted[mode], draft, data, expected, target_std, progress)
        for mode in modes
    ]
    report = Report(
        model=str(args.model),
        model_sha256=draft.source_sha256,
        data=data.data,
        windows=len(data.evaluate),
        target_std=scale,
        max_error=max_error,
        runtime=_runtime_name(),
        candidates=candidates,
    )
    if auto:
        assert max_error is not None
        chosen, why = choose(candidates, max_error)
    else:
        chosen, why = _check_single(candidates[0], max_error)
    report.chosen = chosen.mode if chosen else None
    report.why = why
    print(report.table())
    if args.report is not None:
        report.write(args.report)
    if chosen is None:
        raise ConvertError(f"{why}; nothing written to {args.output}")

    manifest = replace(
        _with_tensor_quant(draft, chosen.tflite),
        quantization=chosen.mode,
        warnings=tuple(chosen.warnings),
        accuracy=Accuracy(
            mae=chosen.mae,
            max_abs=chosen.max_abs,
            windows=len(data.evaluate),
            data=data.data,
            target_std=scale,
            forecast_mae=_forecast_mae(expected, data.evaluate_actual),
        ),
        latency_ms=chosen.latency_ms,
        selection=f"{chosen.mode}: {why}",
    )
    bundle = embed_manifest(chosen.tflite, manifest)
    write_atomic(args.output, bundle)
    print(
        f"wrote {args.output} ({len(bundle)} bytes, {chosen.mode}) in "
        f"{time.monotonic() - started:.1f} s"
    )
    return Path(args.output)


def _forecast_mae(
    expected: np.ndarray, actual: Optional[np.ndarray]
) -> tuple[tuple[float, ...], ...]:
    """The model's MAE against what happened, per step and target, on held-out windows;
    empty unless every step has at least 10 windows with an actual value."""
    if actual is None or actual.shape != expected.shape:
        return ()
    known = np.isfinite(actual)
    if known.sum(axis=0).min() < 10:
        return ()
    error = np.where(known, np.abs(expected - np.nan_to_num(actual)), 0.0)
    mae = error.sum(axis=0) / known.sum(axis=0)
    return tuple(tuple(round(float(v), 6) for v in row) for row in mae)


def _convert_all(
    source: SourceModel,
    modes: tuple[str, ...],
    draft: Manifest,
    data: Calibration,
    int8_io: bool,
    progress: bool,
    batch: int,
) -> dict[str, Candidate]:
    """Convert to every mode, two child processes at a time; failures become unavailable."""
    from concurrent.futures import ThreadPoolExecutor

    def one(mode: str) -> Candidate:
        c = Candidate(mode=mode)
        if mode == "int8" and data.data != "calibration":
            c.status, c.reason = "unavailable", "int8 needs --calibration data"
            return c
        calib = _model_inputs(data.calibrate, draft) if mode == "int8" else None
        try:
            c.tflite = convert_in_child(
                source, mode, calib, int8_io and mode == "int8", progress, batch
            )
        except ConvertError as exc:
            c.status, c.reason = "unavailable", f"mode {mode} unavailable for this model: {exc}"
        return c

    workers = max(1, min(2, len(modes), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # int8 (the slowest, with calibration) first so it overlaps the others
        order = sorted(modes, key=lambda m: m != "int8")
        return dict(zip(order, pool.map(one, order)))


def _measure_mode(
    c: Candidate,
    draft: Manifest,
    data: Calibration,
    expected: np.ndarray,
    target_std: np.ndarray,
    progress: bool,
) -> Candidate:
    """Run a converted candidate against the reference; mark it if beyond its bound."""
    if c.status == "unavailable":
        return c
    mode, tflite = c.mode, c.tflite
    manifest = replace(_with_tensor_quant(draft, tflite), quantization=mode)
    agreement = measure(tflite, manifest, data.evaluate, expected, target_std, progress)
    c.size = len(tflite)
    c.mae, c.max_abs = agreement.mae, agreement.max_abs
    c.rel_mae, c.rel_max = agreement.rel_mae, agreement.rel_max
    c.latency_ms = agreement.latency_ms
    c.warnings = mode_warnings(mode, tflite)
    for warning in c.warnings:
        print(f"sensorcast convert: warning: {warning}", file=sys.stderr)
    if agreement.batch_diff > 1e-4 * agreement.scale:
        c.status = "beyond bound"
        c.reason = f"the batch signature differs from the single one by {agreement.batch_diff:.3g}"
    elif not within_bound(mode, agreement):
        bound_mae, bound_max = BOUNDS[mode]
        c.status = "beyond bound"
        c.reason = (
            f"disagrees with Keras beyond the {mode} bound ({bound_mae:.2%} MAE, "
            f"{bound_max:.2%} max of the targets' std)"
        )
    return c


def _check_single(c: Candidate, max_error: Optional[float]) -> tuple[Optional[Candidate], str]:
    if c.status == "unavailable":
        return None, c.reason
    if max_error is not None:
        if c.mae > max_error:
            c.status, c.reason = "over budget", f"MAE {c.mae:.3g} > max error {max_error:.3g}"
            return None, f"the {c.mode} model's MAE {c.mae:.3g} exceeds --max-error {max_error:.3g}"
        c.status, c.reason = "ok", ""
        return c, f"requested, MAE within --max-error {max_error:.3g}"
    if c.status != "ok":
        return None, (
            f"the {c.mode} model {c.reason}: MAE {c.mae:.3g}, max abs {c.max_abs:.3g}; "
            "try a less aggressive --quantize mode or pass --max-error"
        )
    return c, "requested with --quantize"


def _resolve_features(
    given: Optional[list[str]], calibration: Optional[Path], shape: ModelShape
) -> list[str]:
    if given is None and calibration is not None and calibration.suffix != ".npy":
        columns, _, _ = read_csv(calibration)
        if len(columns) == shape.n_features:
            given = columns
            logger.info("features not given: taking the calibration columns %s", ", ".join(columns))
    if given is None:
        raise ConvertError(
            f"name the model's {shape.n_features} input features in order with --features a,b,..."
        )
    if len(given) != shape.n_features:
        raise ConvertError(
            f"--features names {len(given)} features but the model's input has {shape.n_features}"
        )
    return given


def _resolve_targets(
    given: Optional[list[str]], features: list[str], shape: ModelShape
) -> list[str]:
    if given is None:
        if shape.n_targets > len(features):
            raise ConvertError(
                f"the model forecasts {shape.n_targets} targets; name them with --targets"
            )
        given = features[: shape.n_targets]
        logger.info("targets not given: taking %s (the first features)", ", ".join(given))
    if len(given) != shape.n_targets:
        raise ConvertError(
            f"--targets names {len(given)} targets but the model outputs {shape.n_targets}"
        )
    return given


def _model_inputs(windows: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Windows in the model's own input units (normalized if the bundle normalizes)."""
    norm = manifest.normalization
    if not norm:
        return windows.astype(np.float32)
    mean = np.array([norm[f].mean for f in manifest.features])
    std = np.array([norm[f].std for f in manifest.features])
    normalized: np.ndarray = ((windows - mean) / std).astype(np.float32)
    return normalized


def _target_scale(data: Calibration, manifest: Manifest, expected: np.ndarray) -> np.ndarray:
    """The targets' std in target units: from the data, the norm, or the reference outputs."""
    if data.target_std is not None and np.all(data.target_std > 0):
        return data.target_std
    if manifest.normalization:
        return np.array([manifest.normalization[t].std for t in manifest.targets])
    spread = expected.reshape(-1, expected.shape[-1]).std(axis=0)
    return np.where(spread > 0, spread, 1.0)


def _with_tensor_quant(manifest: Manifest, tflite: bytes) -> Manifest:
    """Record the interpreter's input/output types and quantization in the manifest."""
    interp = load_runtime().interpreter(tflite)
    quants = []
    for detail in (interp.get_input_details()[0], interp.get_output_details()[0]):
        dtype = np.dtype(detail["dtype"]).name
        scale, zero = detail["quantization"]
        quants.append(
            TensorQuant(dtype=dtype, scale=float(scale), zero_point=int(zero))
            if dtype == "int8"
            else TensorQuant(dtype=dtype)
        )
    return replace(manifest, input=quants[0], output=quants[1])


def tensor_types(tflite: bytes) -> set[str]:
    """Types of every tensor in the flatbuffer, constants included (``float32``, ``int8``...)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {v: k.lower() for k, v in vars(schema.TensorType).items() if k.isupper()}
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    return {names.get(t.type, str(t.type)) for g in model.subgraphs for t in g.tensors}


def mode_warnings(mode: str, tflite: bytes) -> list[str]:
    """Check the converted model really is what ``mode`` promises; say so when not.

    The converter skips weight tensors under 1024 elements for float16 and
    dynamic-range quantization, so a small model can come out unchanged.
    """
    types = tensor_types(tflite)
    if mode == "float16" and "float16" not in types:
        return [
            "float16 left every weight in float32 (the converter skips small tensors); "
            "the bundle is effectively float32"
        ]
    if mode == "dynamic" and "int8" not in types:
        return [
            "dynamic-range quantization left every weight in float32 (the converter skips "
            "tensors under 1024 elements); the bundle is effectively float32"
        ]
    if mode == "int8" and "int8" not in types:
        return ["int8 produced no int8 tensor; the bundle is not integer-quantized"]
    return []


def _runtime_name() -> str:
    runtime = load_runtime()
    return f"{runtime.name} {runtime.version}"


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"sensorcast": __version__, "tensorflow": tf.__version__, "keras": keras.__version__}
