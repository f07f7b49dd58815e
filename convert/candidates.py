"""Every quantization mode converted and measured: the candidates a report chooses from.

Each mode is converted in a child process (TensorFlow's converter can crash the process and
carries state between conversions), then forecasts the held-out windows with the agent's own
runtime and is compared with Keras; a mode that did not change the model is flagged.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import Any, Optional

import numpy as np
from sensorcast.agent.forecast.manifest import Manifest, TensorQuant
from sensorcast.agent.forecast.runtime import load_runtime
from sensorcast.convert import ConvertError
from sensorcast.convert.calibrate import Calibration
from sensorcast.convert.load import SourceModel
from sensorcast.convert.ops import check_runnable
from sensorcast.convert.quantize import convert_in_child
from sensorcast.convert.ranges import Checks, headroom_calibration
from sensorcast.convert.report import Candidate, TargetStats
from sensorcast.convert.verify import bound_for, errors, run_bundle, within_bound

__all__ = [
    "FLOAT16_MAX",
    "convert_all",
    "float16_overflow",
    "measure_mode",
    "mode_warnings",
    "model_inputs",
    "retry_without_headroom",
    "tensor_types",
    "with_tensor_quant",
]

#: The largest finite float16.
FLOAT16_MAX = 65504.0


def convert_all(
    source: SourceModel,
    modes: tuple[str, ...],
    draft: Manifest,
    data: Calibration,
    int8_io: bool,
    progress: bool,
    batch: int,
    headroom: bool = True,
) -> dict[str, Candidate]:
    """Convert to every mode, two child processes at a time; failures, and models the agent's
    runtimes cannot run, become unavailable. int8 calibrates with ``headroom`` beyond the
    data (see :func:`~sensorcast.convert.ranges.headroom_calibration`)."""
    from concurrent.futures import ThreadPoolExecutor

    calib = None
    if data.data == "calibration":
        calib = model_inputs(data.calibrate, draft)
        if headroom:
            calib = headroom_calibration(calib, draft)

    def one(mode: str) -> Candidate:
        c = Candidate(mode=mode)
        integer = mode.startswith("int8")
        if integer and calib is None:
            c.status, c.reason = "unavailable", "int8 needs --calibration data"
            return c
        try:
            c.tflite = convert_in_child(
                source, mode, calib if integer else None, int8_io and integer, progress, batch
            )
            check_runnable(c.tflite, mode)
        except ConvertError as exc:
            c.status, c.reason = "unavailable", f"mode {mode} unavailable for this model: {exc}"
        return c

    workers = max(1, min(2, len(modes), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # int8 (the slowest, with calibration) first so it overlaps the others
        order = sorted(modes, key=lambda m: not m.startswith("int8"))
        return dict(zip(order, pool.map(one, order)))


def measure_mode(
    c: Candidate,
    draft: Manifest,
    checks: Checks,
    target_std: np.ndarray,
    progress: bool,
    source: Optional[SourceModel] = None,
) -> Candidate:
    """Run a converted candidate on every check's windows against the reference: per target
    on the held-out windows, every window and beyond the data's range; mark it if beyond its
    bound, and record the input range it holds its bound on."""
    if c.status == "unavailable":
        return c
    mode, tflite = c.mode, c.tflite
    manifest = replace(with_tensor_quant(draft, tflite), quantization=mode)
    run = run_bundle(tflite, manifest, checks.windows(), progress)
    held, every, *beyond = checks.split(run.forecasts)
    c.size, c.latency_ms, c.forecasts = len(tflite), run.latency_ms, held
    e_held = errors(held, checks.held_expected)
    e_every = errors(every, checks.every_expected)
    e_beyond = [errors(f, b.expected) for f, b in zip(beyond, checks.beyond)]
    c.targets = {
        name: TargetStats(
            std=float(target_std[i]),
            mae=float(e_held.mae[i]),
            max_abs=float(e_held.max_abs[i]),
            max_abs_all=float(e_every.max_abs[i]),
            beyond={
                b.level: (float(e.mae[i]), float(e.max_abs[i]))
                for b, e in zip(checks.beyond, e_beyond)
            },
        )
        for i, name in enumerate(draft.targets)
    }
    c.verified_range = checks.observed
    for b, e in zip(checks.beyond, e_beyond):
        if not within_bound(mode, e, target_std).all():
            break
        c.verified_level, c.verified_range = b.level, b.covers
    c.warnings = mode_warnings(mode, tflite)
    for warning in c.warnings:
        print(f"sensorcast convert: warning: {warning}", file=sys.stderr)
    if run.batch_diff > 1e-4 * float(np.mean(target_std)):
        c.status = "beyond bound"
        c.reason = f"the batch signature differs from the single one by {run.batch_diff:.3g}"
    elif not (held_ok := within_bound(mode, e_held, target_std)).all():
        c.status, c.reason = "beyond bound", _beyond_reason(mode, c, draft, held_ok)
        overflow = float16_overflow(source) if mode == "float16" and source else None
        if overflow:
            c.reason = f"{c.reason}: {overflow}"
    return c


def retry_without_headroom(
    c: Candidate,
    source: SourceModel,
    draft: Manifest,
    data: Calibration,
    checks: Checks,
    target_std: np.ndarray,
    options: tuple[bool, bool, int],
) -> Candidate:
    """An int8 candidate calibrated with headroom that strays beyond its bound on the data
    itself (headroom widens every int8 range, costing precision: a Bidirectional LSTM went
    from 2.6 % to 10.5 % of the std), converted again on the data alone. The retry keeps
    the bound in range more often and records the narrower range it was verified on.
    ``options``: (int8_io, progress, batch)."""
    if not (c.mode.startswith("int8") and c.status == "beyond bound"):
        return c
    int8_io, progress, batch = options
    again = convert_all(source, (c.mode,), draft, data, int8_io, progress, batch, False)
    retry = measure_mode(again[c.mode], draft, checks, target_std, progress, source)
    if retry.status != "ok":
        return c
    retry.warnings.append(
        f"{c.mode} calibrated with headroom beyond the data strayed past its bound ({c.reason}); "
        "calibrated on the data alone, verified on the range it holds"
    )
    print(f"sensorcast convert: warning: {retry.warnings[-1]}", file=sys.stderr)
    return retry


def _beyond_reason(mode: str, c: Candidate, draft: Manifest, held_ok: np.ndarray) -> str:
    name = next(t for t, ok in zip(draft.targets, held_ok) if not ok)
    t = c.targets[name]
    bound_mae, bound_max = bound_for(mode)
    return (
        f"disagrees with Keras beyond the {mode} bound ({bound_mae:.2%} MAE, {bound_max:.2%} "
        f"max of the target's std) for {name}: MAE {t.mae:.3g}, max {t.max_abs:.3g}, "
        f"std {t.std:.3g}"
    )


def _layers(model: Any) -> list[Any]:
    """Every layer of a Keras model, nested models' and wrappers' inner ones too."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found += _layers(layer)
        inner = getattr(layer, "layer", None)
        if inner is not None:
            found.append(inner)
    return found


def float16_overflow(source: SourceModel) -> Optional[str]:
    """Why float16 cannot hold the model: a Normalization layer's constant beyond float16's
    range (pressure in Pa: mean 1.013e5 > 65504), and what to do; None when none is."""
    if source.kind != "keras":
        return None
    for layer in _layers(source.handle):
        if type(layer).__name__ != "Normalization":
            continue
        over = [
            f"{key} {peak:.3g}"
            for key in ("mean", "variance")
            if (peak := _peak(layer, key)) > FLOAT16_MAX
        ]
        if over:
            return (
                f"the Normalization layer {layer.name!r} {' and '.join(over)} overflows "
                f"float16 (max {FLOAT16_MAX:.0f}): normalize outside the model with --norm "
                "instead, or use --quantize float32 or dynamic"
            )
    return None


def _peak(layer: Any, key: str) -> float:
    """The largest magnitude of a layer's constant (0 when it has none)."""
    value = getattr(layer, key, None)
    try:
        return float(np.max(np.abs(np.asarray(value, dtype=np.float64))))
    except (TypeError, ValueError):
        return 0.0


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
