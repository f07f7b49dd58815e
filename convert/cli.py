"""``sensorcast convert``: Keras model -> verified, self-describing TFLite bundle."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from agent import __version__
from agent.errors import SensorcastError
from agent.manifest import Accuracy, Manifest, Norm, TensorQuant
from agent.runtime import load_runtime
from convert import ConvertError
from convert.bundle import embed_manifest, write_atomic
from convert.calibrate import Calibration, load_calibration, read_csv, read_norm, synthetic_windows
from convert.load import ModelShape, file_sha256, load_keras, model_shape
from convert.quantize import MODES, convert_in_child
from convert.verify import BOUNDS, keras_forecast, measure, within_bound

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensorcast convert",
        description="Convert a Keras model into a TFLite bundle that carries its manifest, "
        "after checking the converted model against Keras.",
    )
    p.add_argument("model", type=Path, help="Keras 3 .keras (or legacy .h5) model")
    p.add_argument("-o", "--output", type=Path, required=True, help="bundle to write (.tflite)")
    p.add_argument("--quantize", choices=MODES, default="float32", help="quantization mode")
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
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        convert_model(args)
    except SensorcastError as exc:
        print(f"sensorcast convert: error: {exc}", file=sys.stderr)
        return 1
    return 0


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
    if args.int8_io and args.quantize != "int8":
        raise ConvertError("--int8-io only applies to --quantize int8")
    model = load_keras(args.model)
    shape = model_shape(model, args.model)
    features = _resolve_features(_names(args.features), args.calibration, shape)
    targets = _names(args.targets)
    if targets is None:
        if shape.n_targets > len(features):
            raise ConvertError(
                f"the model forecasts {shape.n_targets} targets; name them with --targets"
            )
        targets = features[: shape.n_targets]
        logger.info("targets not given: taking %s (the first features)", ", ".join(targets))
    if len(targets) != shape.n_targets:
        raise ConvertError(
            f"--targets names {len(targets)} targets but the model outputs {shape.n_targets}"
        )
    norm: dict[str, Norm] = {}
    if args.norm is not None:
        norm = read_norm(args.norm, list(dict.fromkeys([*features, *targets])))

    if args.calibration is not None:
        data = load_calibration(args.calibration, features, targets, shape.window)
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
        quantization=args.quantize,
        normalization=norm,
        source_sha256=file_sha256(args.model),
        source_name=args.model.name,
        versions=_versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    calib_inputs = _model_inputs(data.calibrate, draft) if args.quantize == "int8" else None
    logger.info("converting %s to %s in a child process", args.model, args.quantize)
    tflite = convert_in_child(
        args.model, args.quantize, shape.window, shape.n_features, calib_inputs, args.int8_io
    )
    draft = _with_tensor_quant(draft, tflite)
    warnings = mode_warnings(args.quantize, tflite)
    for warning in warnings:
        print(f"sensorcast convert: warning: {warning}", file=sys.stderr)
    expected = keras_forecast(model, data.evaluate, draft)
    agreement = measure(tflite, draft, data.evaluate, expected, _target_scale(data, draft))
    bound_mae, bound_max = BOUNDS[args.quantize]
    summary = (
        f"MAE {agreement.mae:.3g} ({agreement.rel_mae:.2%} of the targets' std), "
        f"max abs {agreement.max_abs:.3g} ({agreement.rel_max:.2%}) against Keras on "
        f"{agreement.windows} {data.data} windows"
    )
    if not within_bound(args.quantize, agreement):
        raise ConvertError(
            f"the {args.quantize} model disagrees with Keras beyond the bound "
            f"({bound_mae:.2%} MAE, {bound_max:.2%} max of the targets' std): {summary}; "
            f"nothing written to {args.output}; try a less aggressive --quantize mode"
        )
    manifest = Manifest(
        **{
            **draft.__dict__,
            "warnings": tuple(warnings),
            "accuracy": Accuracy(
                mae=agreement.mae,
                max_abs=agreement.max_abs,
                windows=agreement.windows,
                data=data.data,
            ),
        }
    )
    bundle = embed_manifest(tflite, manifest)
    write_atomic(args.output, bundle)
    print(
        f"wrote {args.output} ({len(bundle)} bytes, {args.quantize}) in "
        f"{time.monotonic() - started:.1f} s: {summary}"
    )
    return Path(args.output)


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


def _model_inputs(windows: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Windows in the model's own input units (normalized if the bundle normalizes)."""
    norm = manifest.normalization
    if not norm:
        return windows.astype(np.float32)
    mean = np.array([norm[f].mean for f in manifest.features])
    std = np.array([norm[f].std for f in manifest.features])
    normalized: np.ndarray = ((windows - mean) / std).astype(np.float32)
    return normalized


def _target_scale(data: Calibration, manifest: Manifest) -> Optional[np.ndarray]:
    if data.target_std is not None:
        return data.target_std
    if manifest.normalization:
        return np.array([manifest.normalization[t].std for t in manifest.targets])
    return None


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
    return Manifest(**{**manifest.__dict__, "input": quants[0], "output": quants[1]})


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


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"sensorcast": __version__, "tensorflow": tf.__version__, "keras": keras.__version__}
