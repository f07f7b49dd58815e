"""Every quantization mode converted and measured: the candidates a report chooses from.

Each mode is converted in a child process (TensorFlow's converter can crash the process and
carries state between conversions), then forecasts the held-out windows with the agent's own
runtime and is compared with Keras; a mode that did not change the model is flagged.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import numpy as np
from sensorcast.agent.forecast.manifest import Manifest, TensorQuant
from sensorcast.agent.forecast.runtime import load_runtime
from sensorcast.convert import ConvertError
from sensorcast.convert.calibrate import Calibration
from sensorcast.convert.load import SourceModel
from sensorcast.convert.quantize import convert_in_child
from sensorcast.convert.report import Candidate
from sensorcast.convert.verify import BOUNDS, measure, within_bound

__all__ = [
    "convert_all",
    "measure_mode",
    "mode_warnings",
    "model_inputs",
    "tensor_types",
    "with_tensor_quant",
]


def convert_all(
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
        calib = model_inputs(data.calibrate, draft) if mode == "int8" else None
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


def measure_mode(
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
    manifest = replace(with_tensor_quant(draft, tflite), quantization=mode)
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


def with_tensor_quant(manifest: Manifest, tflite: bytes) -> Manifest:
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


def model_inputs(windows: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Windows in the model's own input units (normalized if the bundle normalizes)."""
    norm = manifest.normalization
    if not norm:
        return windows.astype(np.float32)
    mean = np.array([norm[f].mean for f in manifest.features])
    std = np.array([norm[f].std for f in manifest.features])
    normalized: np.ndarray = ((windows - mean) / std).astype(np.float32)
    return normalized


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
