"""Phase 2: every variant of every grid point, converted and bundled (``--jobs`` at a time).

The four modes the converter offers are made by its own code
(``sensorcast.convert.quantize.convert_in_child`` on ``load_source``); the ``*-unrolled``
experiments by the ``unrolled`` child: the project's ``unrolled_clone``, exported as a
SavedModel with a fixed ``(1, W, 3)`` signature and converted from it. Each result gets the
sensorcast manifest embedded; the sizes reported are those bundles'.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.convert.grid import HORIZON, N_FEATURES, PROJECT_MODES, VARIANTS, last_line
from bench.harness.children import Runner

__all__ = ["child_unrolled", "convert_all", "graph_stats"]

#: How much longer than a float conversion each variant takes (the longest start first).
HEAVY = {"int8": 3, "float32-unrolled": 2, "float16-unrolled": 2, "dynamic-unrolled": 2}


def child_unrolled(spec: dict[str, Any]) -> dict[str, Any]:
    """Convert the model with its LSTM unrolled (no WHILE loop), float32/float16/dynamic/int8.

    The clone is the project's own ``sensorcast.convert._worker.unrolled_clone``: Keras
    ``clone_model`` with ``unroll=True`` and a fixed (1, W, F) input, then ``set_weights``;
    exported as a SavedModel with that signature and converted from it.
    """
    import keras
    import tensorflow as tf
    from sensorcast.convert._worker import unrolled_clone

    window, variant = spec["window"], spec["variant"]
    model = keras.models.load_model(spec["model"], compile=False)
    clone = unrolled_clone(model, window, N_FEATURES)
    saved = Path(spec["workdir"]) / "saved"
    clone.export(
        str(saved),
        format="tf_saved_model",
        verbose=False,
        input_signature=[tf.TensorSpec((1, window, N_FEATURES), tf.float32)],
    )
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if variant != "float32-unrolled":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16-unrolled":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8-unrolled":  # the converter's int8 before issue 15 (no fused LSTM)
        calib = np.load(spec["calibration"]).astype(np.float32)
        converter.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    Path(spec["output"]).write_bytes(converter.convert())
    return {}


def _convert(runner: Runner, point: dict[str, Any], variant: str) -> dict[str, Any]:
    """Convert one variant in a child process; the .tflite bytes, time, or the error."""
    from sensorcast.convert import ConvertError
    from sensorcast.convert.quantize import convert_in_child

    work = Path(point["dir"])
    started = time.monotonic()
    if variant in PROJECT_MODES:
        calib = np.load(work / "data.npz")["calib"] if variant == "int8" else None
        try:
            tflite = convert_in_child(point["source"], variant, calib)
        except ConvertError as exc:
            return {"error": str(exc)[:400], "convert_s": time.monotonic() - started}
        return {"tflite": tflite, "convert_s": time.monotonic() - started}
    sub = work / f"conv-{variant}"
    sub.mkdir(exist_ok=True)
    spec = {
        "model": str(work / "model.keras"),
        "window": point["window"],
        "variant": variant,
        "workdir": str(sub),
        "output": str(sub / "model.tflite"),
    }
    res = runner.result("unrolled", spec, tag=variant, work=sub)
    if "error" in res:
        return {"error": res["error"], "convert_s": time.monotonic() - started}
    shutil.rmtree(sub / "saved", ignore_errors=True)
    return {"tflite": (sub / "model.tflite").read_bytes(), "convert_s": time.monotonic() - started}


def bundle_bytes(tflite: bytes, point: dict[str, Any], variant: str) -> tuple[bytes, list[str]]:
    """The project's bundle (manifest embedded) for ``tflite``, and the converter's warnings."""
    from sensorcast.agent.forecast.manifest import Manifest
    from sensorcast.convert.bundle import embed_manifest
    from sensorcast.convert.candidates import mode_warnings
    from sensorcast.convert.load import file_sha256

    mode = variant.split("-")[0]
    manifest = Manifest(
        window=point["window"],
        features=("f0", "f1", "f2"),
        targets=("f0",),
        horizon=HORIZON,
        period_s=3600.0,
        quantization=mode,
        source_sha256=file_sha256(Path(point["dir"]) / "model.keras"),
        source_name="model.keras",
        versions=point["versions"],
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    return embed_manifest(tflite, manifest), mode_warnings(mode, tflite)


def graph_stats(tflite: bytes) -> dict[str, int]:
    """Tensors, operators and bytes of tensor names and of constant data in a .tflite."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    tensors = [t for g in model.subgraphs for t in g.tensors]
    stats = {
        "tensors": len(tensors),
        "operators": sum(len(g.operators) for g in model.subgraphs),
        "name_bytes": sum(len(t.name or b"") for t in tensors),
        "const_bytes": sum(len(b.data) for b in model.buffers if b.data is not None),
    }
    for i, t in enumerate(tensors):  # what the file would weigh with short tensor names
        t.name = f"t{i}".encode()
    stats["short_names_bytes"] = len(flatbuffer_utils.convert_object_to_bytearray(model))
    return stats


def _bundle(point: dict[str, Any], variant: str, res: dict[str, Any]) -> None:
    """Embed the manifest in a converted variant and record its sizes (or why not)."""
    tflite = res.pop("tflite", None)
    if tflite is None:
        return
    try:
        bundle, warnings = bundle_bytes(tflite, point, variant)
    except Exception as exc:
        res["error"] = f"embedding the manifest failed: {last_line(exc)}"
        return
    path = Path(point["dir"]) / f"{variant}.tflite"
    path.write_bytes(bundle)
    res.update(
        path=str(path),
        tflite_bytes=len(tflite),
        bundle_bytes=len(bundle),
        warnings=warnings,
        **graph_stats(tflite),
    )


def convert_all(
    runner: Runner, points: list[dict[str, Any]], jobs: int, log: Callable[[str], None]
) -> None:
    """Every variant of every point into ``point["variants"]``, ``jobs`` at a time."""
    import keras
    import tensorflow as tf
    from sensorcast.convert.load import load_source

    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    for point in points:
        point["source"] = load_source(Path(point["dir"]) / "model.keras")
        point["versions"] = versions
        point["variants"] = {}
    todo = [(pt, v) for pt in points for v in VARIANTS]
    todo.sort(key=lambda j: -j[0]["window"] * HEAVY.get(j[1], 1))  # longest first
    log(f"2/3 converting {len(todo)} models, {jobs} at a time ...")

    def convert(job: tuple[dict[str, Any], str]) -> None:
        point, variant = job
        res = _convert(runner, point, variant)
        point["variants"][variant] = res
        status = res.get("error", f"{len(res.get('tflite', b''))} bytes")
        log(f"  {point['name']} {variant}: {status[:120]} ({res['convert_s']:.0f} s)")

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(convert, todo))
    for point in points:
        for variant, res in point["variants"].items():
            _bundle(point, variant, res)
