"""``sensorcast convert``: Keras model -> verified, self-describing TFLite bundle."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
from sensorcast.agent import __version__
from sensorcast.agent.forecast.manifest import FORMAT_VERSION, STATEFUL_FORMAT, Manifest, Norm
from sensorcast.agent.forecast.runtime import load_runtime
from sensorcast.convert import ConvertError, run_command
from sensorcast.convert.accuracy import accuracy_of, trust_warnings
from sensorcast.convert.baselines import default_season, naive_baselines
from sensorcast.convert.bundle import embed_manifest, write_atomic
from sensorcast.convert.calibrate import (
    Calibration,
    load_calibration,
    parse_time_features,
    read_csv,
    synthetic_windows,
)
from sensorcast.convert.candidates import (
    convert_all,
    measure_mode,
    mode_warnings,
    retry_without_headroom,
    tensor_types,
    with_tensor_quant,
)
from sensorcast.convert.load import (
    KNOWN_LAYERS,
    ModelShape,
    file_sha256,
    import_user_code,
    load_source,
)
from sensorcast.convert.norm import read_norm
from sensorcast.convert.ops import inspect_ops
from sensorcast.convert.quantize import MODES
from sensorcast.convert.ranges import build_checks
from sensorcast.convert.report import DEFAULT_MAX_ERROR_FRACTION, Report
from sensorcast.convert.select import MaxError, budgets, decide, parse_max_error

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
        help="largest MAE against Keras to accept, in target units: one number, or one per "
        "target as temp=0.1,hum=1 (default: "
        f"{DEFAULT_MAX_ERROR_FRACTION:.0%}% of each target's std; a single mode is held to it "
        "only when given)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write the bundle even past the sanity bound or the budget (the manifest says so)",
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
    p.add_argument(
        "--norm",
        type=Path,
        help='the normalization the model was trained with: JSON {"<column>": {"mean": m, '
        '"std": s}} or {"<column>": {"min": a, "max": b}} (`sensorcast norm` writes it)',
    )
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
    p.add_argument(
        "--season",
        type=int,
        help="steps in a season for the seasonal naive baseline (default: one day of periods)",
    )
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE_OR_FILE",
        help="import this module or .py file before loading the model (custom layers, "
        "subclassed models); repeatable",
    )
    p.add_argument(
        "--time-features",
        help='inputs computed from the timestamp, not read from a sensor: "Day sin=day_sin,'
        'Day cos=day_cos,..." (kinds: day/week/year _sin/_cos)',
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
    max_error = _check_options(args)
    computed = parse_time_features(args.time_features) if args.time_features else {}
    import_user_code(args.imports or [])
    source = load_source(args.model)
    shape = source.shape
    for name, cls in source.layers:
        if cls not in KNOWN_LAYERS:
            logger.info("note: layer %r (%s) is not among the layers sensorcast tests", name, cls)
    features = _resolve_features(_names(args.features), args.calibration, shape, computed)
    targets = _resolve_targets(_names(args.targets), features, shape)
    norm: dict[str, Norm] = {}
    if args.norm is not None:
        norm = read_norm(args.norm, list(dict.fromkeys([*features, *targets])))
    data = _data(args, features, targets, shape, norm, computed)
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
        computed=computed,
        source_sha256=file_sha256(args.model),
        source_name=args.model.name,
        versions=_versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    checks = build_checks(source, data, draft)
    target_std = _target_scale(data, draft, checks.held_expected)
    budget = budgets(max_error, targets, target_std)
    auto = args.quantize == "auto"
    modes = MODES if auto else (args.quantize,)
    progress = not args.quiet
    logger.info("converting %s to %s, each in a child process", args.model.name, ", ".join(modes))
    converted = convert_all(source, modes, draft, data, args.int8_io, progress, args.batch)
    # Measured one after the other, so latencies do not compete for the CPU.
    options = (args.int8_io, progress, args.batch)
    candidates = [
        retry_without_headroom(
            measure_mode(converted[mode], draft, checks, target_std, progress, source),
            source, draft, data, checks, target_std, options,
        )
        for mode in modes
    ]  # fmt: skip
    report = Report(
        model=str(args.model),
        model_sha256=draft.source_sha256,
        data=data.data,
        windows=len(data.evaluate),
        budget=budget,
        budget_given=max_error is not None,
        runtime=_runtime_name(),
        candidates=candidates,
    )
    decision = decide(candidates, auto, budget, max_error is not None, args.force)
    report.chosen = decision.chosen.mode if decision.chosen else None
    report.why, report.forced = decision.why, bool(decision.forced)
    print(report.table())
    if args.report is not None:
        report.write(args.report)
    chosen = decision.chosen
    if chosen is None:
        raise ConvertError(f"{decision.why}; nothing written to {args.output}")

    season = args.season if args.season is not None else default_season(float(period))
    csv = args.calibration if data.data == "calibration" else None
    naive = naive_baselines(csv, targets, data, shape.window, season)
    accuracy = accuracy_of(chosen, data, checks, naive)
    noticed = [*decision.forced, *trust_warnings(accuracy, naive)]
    for warning in noticed:  # the mode's own warnings were printed when it was measured
        print(f"sensorcast convert: warning: {warning}", file=sys.stderr)
    warnings = (*decision.forced, *chosen.warnings, *noticed[len(decision.forced) :])
    ops = inspect_ops(chosen.tflite, recurrent=source.recurrent())
    manifest = replace(
        with_tensor_quant(draft, chosen.tflite),
        quantization=chosen.mode,
        warnings=tuple(warnings),
        accuracy=accuracy,
        latency_ms=chosen.latency_ms,
        selection=f"{chosen.mode}: {decision.why}",
        verified_range=_verified_range(chosen.verified_range, data, norm),
        ops=dict(ops.histogram),
        recurrence=ops.recurrence,
        forced=bool(decision.forced),
        # A fused recurrent op keeps its state between invokes: agents that do not reset it
        # (format 1 only) must refuse the bundle rather than carry state across windows.
        format=STATEFUL_FORMAT if ops.recurrence == "fused" else FORMAT_VERSION,
    )
    bundle = embed_manifest(chosen.tflite, manifest)
    write_atomic(args.output, bundle)
    print(
        f"wrote {args.output} ({len(bundle)} bytes, {chosen.mode}"
        f"{', FORCED' if decision.forced else ''}) in {time.monotonic() - started:.1f} s"
    )
    return Path(args.output)


def _verified_range(
    verified: dict[str, tuple[float, float]], data: Calibration, norm: dict[str, Norm]
) -> dict[str, tuple[float, float]]:
    """The range to record: none when it says nothing about readings (synthetic windows of
    N(0, 1) in reading units, with no --calibration and no --norm to place them)."""
    if data.data == "synthetic" and not norm:
        logger.info("note: no verified input range recorded (no --calibration data or --norm)")
        return {}
    return verified


def _check_options(args: argparse.Namespace) -> Optional[MaxError]:
    """The options that only make sense together, checked before any TensorFlow work;
    returns the parsed ``--max-error``."""
    if args.int8_io and args.quantize not in ("int8", "auto"):
        raise ConvertError("--int8-io only applies to --quantize int8 or auto")
    if not 1 <= args.batch <= 4096:
        raise ConvertError("--batch must be between 1 and 4096")
    if args.season is not None and args.season < 1:
        raise ConvertError("--season must be a number of steps, 1 or more")
    return parse_max_error(args.max_error)


def _data(
    args: argparse.Namespace,
    features: list[str],
    targets: list[str],
    shape: ModelShape,
    norm: dict[str, Norm],
    computed: dict[str, str],
) -> Calibration:
    """The windows to calibrate and check on: ``--calibration``, else synthetic ones."""
    if args.calibration is not None:
        return load_calibration(
            args.calibration, features, targets, shape.window, shape.horizon, computed=computed
        )
    if args.quantize == "int8":
        raise ConvertError(
            "int8 needs calibration data: pass --calibration DATA.csv with the model's features"
        )
    logger.info("no --calibration: checking the conversion on synthetic windows")
    return synthetic_windows(shape.window, features, norm, computed=computed, period_s=args.period)


def _resolve_features(
    given: Optional[list[str]],
    calibration: Optional[Path],
    shape: ModelShape,
    computed: dict[str, str],
) -> list[str]:
    if given is None and calibration is not None and calibration.suffix != ".npy":
        columns, _, _ = read_csv(calibration)
        # computed time features have no column: they come after the sensor columns
        columns = [c for c in columns if c not in computed] + list(computed)
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
