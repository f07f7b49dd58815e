"""``sensorcast convert``: Keras model -> verified, self-describing TFLite bundle."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
from sensorcast.agent import __version__
from sensorcast.agent.forecast.manifest import Accuracy, Manifest, Norm
from sensorcast.agent.forecast.runtime import load_runtime
from sensorcast.convert import ConvertError, run_command
from sensorcast.convert.bundle import embed_manifest, write_atomic
from sensorcast.convert.calibrate import (
    Calibration,
    load_calibration,
    read_csv,
    synthetic_windows,
)
from sensorcast.convert.candidates import (
    convert_all,
    measure_mode,
    mode_warnings,
    tensor_types,
    with_tensor_quant,
)
from sensorcast.convert.load import KNOWN_LAYERS, ModelShape, file_sha256, load_source
from sensorcast.convert.norm import read_norm
from sensorcast.convert.quantize import MODES
from sensorcast.convert.report import DEFAULT_MAX_ERROR_FRACTION, Candidate, Report, choose
from sensorcast.convert.verify import reference_forecast

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
    _check_options(args)
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
    data = _data(args, features, targets, shape, norm)
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
    converted = convert_all(source, modes, draft, data, args.int8_io, progress, args.batch)
    # Measured one after the other, so latencies do not compete for the CPU.
    candidates = [
        measure_mode(converted[mode], draft, data, expected, target_std, progress) for mode in modes
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
    chosen, why = _choose(report, auto)
    print(report.table())
    if args.report is not None:
        report.write(args.report)
    if chosen is None:
        raise ConvertError(f"{why}; nothing written to {args.output}")

    manifest = replace(
        with_tensor_quant(draft, chosen.tflite),
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


def _check_options(args: argparse.Namespace) -> None:
    """The options that only make sense together, checked before any TensorFlow work."""
    if args.int8_io and args.quantize not in ("int8", "auto"):
        raise ConvertError("--int8-io only applies to --quantize int8 or auto")
    if not 1 <= args.batch <= 4096:
        raise ConvertError("--batch must be between 1 and 4096")
    if args.max_error is not None and not args.max_error > 0:
        raise ConvertError("--max-error must be a positive number in target units")


def _data(
    args: argparse.Namespace,
    features: list[str],
    targets: list[str],
    shape: ModelShape,
    norm: dict[str, Norm],
) -> Calibration:
    """The windows to calibrate and check on: ``--calibration``, else synthetic ones."""
    if args.calibration is not None:
        return load_calibration(args.calibration, features, targets, shape.window, shape.horizon)
    if args.quantize == "int8":
        raise ConvertError(
            "int8 needs calibration data: pass --calibration DATA.csv with the model's features"
        )
    logger.info("no --calibration: checking the conversion on synthetic windows")
    return synthetic_windows(shape.window, features, norm)


def _choose(report: Report, auto: bool) -> tuple[Optional[Candidate], str]:
    """Pick the bundle to write (``auto``: among every mode) and note it in ``report``."""
    if auto:
        assert report.max_error is not None
        chosen, why = choose(report.candidates, report.max_error)
    else:
        chosen, why = _check_single(report.candidates[0], report.max_error)
    report.chosen = chosen.mode if chosen else None
    report.why = why
    return chosen, why


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


def _target_scale(data: Calibration, manifest: Manifest, expected: np.ndarray) -> np.ndarray:
    """The targets' std in target units: from the data, the norm, or the reference outputs."""
    if data.target_std is not None and np.all(data.target_std > 0):
        return data.target_std
    if manifest.normalization:
        return np.array([manifest.normalization[t].std for t in manifest.targets])
    spread = expected.reshape(-1, expected.shape[-1]).std(axis=0)
    return np.where(spread > 0, spread, 1.0)


def _runtime_name() -> str:
    runtime = load_runtime()
    return f"{runtime.name} {runtime.version}"


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"sensorcast": __version__, "tensorflow": tf.__version__, "keras": keras.__version__}
