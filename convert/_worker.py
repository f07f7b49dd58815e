"""Child process that runs one TFLite conversion.

TensorFlow's converter can crash the whole process (full-int8 calibration of
a Keras 3 recurrent loop segfaults) and carries state between conversions in
one process (we saw a float32 model disagree with Keras after other models
had been built). So every conversion runs here, in a fresh interpreter, and
the parent turns a crash into a message. Usage: ``python -m sensorcast.convert._worker SPEC.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ERROR_PREFIX = "sensorcast-convert-error: "
PROGRESS_PREFIX = "sensorcast-convert-progress: "
SINGLE_SIGNATURE = "forecast"
BATCH_SIGNATURE = (
    "forecast_batch"  # must match sensorcast.agent.forecast.forecaster.BATCH_SIGNATURE
)


def unrolled_clone(model: Any, window: int, n_features: int) -> Any:
    """Rebuild ``model`` with every recurrence unrolled (the export fixes the batch).

    An unrolled recurrence has no WHILE loop, and full-int8 calibration of a
    Keras 3 recurrent WHILE loop segfaults in TensorFlow 2.21.
    """
    import keras

    def unroll(config: dict[str, Any]) -> None:
        inner = config.get("config", config)
        if "unroll" in inner:
            inner["unroll"] = True
        for key in ("layer", "backward_layer"):  # Bidirectional and other wrappers
            if isinstance(inner.get(key), dict):
                unroll(inner[key])

    def clone_layer(layer: Any) -> Any:
        config = layer.get_config()
        unroll(config)
        return layer.__class__.from_config(config)

    inputs = keras.Input(shape=(window, n_features), dtype="float32")
    clone = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    for layer in clone.layers:
        # Normalization derives its mean/variance constants from its weights here.
        finalize = getattr(layer, "finalize_state", None)
        if callable(finalize):
            finalize()
    return clone


def _keras_converter(spec: dict[str, Any], mode: str) -> Any:
    """A converter for a Keras model: exported as a SavedModel with a fixed batch of 1."""
    import keras
    import tensorflow as tf

    window, n_features = spec["window"], spec["n_features"]
    batch = int(spec.get("batch", 1))
    model = keras.models.load_model(spec["model"], compile=False)
    if mode == "int8":
        model = unrolled_clone(model, window, n_features)
    saved = Path(spec["workdir"]) / f"saved_{mode}"
    if batch <= 1:
        model.export(
            str(saved),
            format="tf_saved_model",
            verbose=False,
            input_signature=[tf.TensorSpec((1, window, n_features), tf.float32)],
        )
        return tf.lite.TFLiteConverter.from_saved_model(str(saved))
    # Two signatures over shared weights: one window, and a batch of them for streams
    # that share the model. Signature keys sort "forecast" first, so the single one is
    # the interpreter's default subgraph.
    archive = keras.export.ExportArchive()
    archive.track(model)
    for key, size in ((SINGLE_SIGNATURE, 1), (BATCH_SIGNATURE, batch)):
        archive.add_endpoint(
            key,
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((size, window, n_features), tf.float32)],
        )
    archive.write_out(str(saved), verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(
        str(saved), signature_keys=[SINGLE_SIGNATURE, BATCH_SIGNATURE]
    )


def _saved_model_converter(spec: dict[str, Any]) -> Any:
    """A converter for a SavedModel directory's serving signature, as saved."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(spec["model"])


def convert(spec: dict[str, Any]) -> bytes:
    """Convert the model named in ``spec`` to TFLite bytes in ``spec['mode']``."""
    import numpy as np
    import tensorflow as tf

    mode = spec["mode"]
    if spec.get("kind") == "savedmodel":
        converter = _saved_model_converter(spec)
    else:
        converter = _keras_converter(spec, mode)
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        calib = np.load(spec["calibration"]).astype(np.float32)

        def representative() -> Any:
            for i in range(len(calib)):
                if i % 8 == 0:  # the parent turns these lines into a progress bar
                    print(f"{PROGRESS_PREFIX}{i} {len(calib)}", flush=True)
                yield [calib[i : i + 1]]
            print(f"{PROGRESS_PREFIX}{len(calib)} {len(calib)}", flush=True)

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if spec.get("int8_io"):
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    result: bytes = converter.convert()
    return result


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    if os.environ.get("SENSORCAST_TEST_CRASH_CONVERTER") == spec["mode"]:
        # Test hook: a real crash of this process, to test the parent's handling.
        import ctypes

        ctypes.string_at(0)
    if os.environ.get("SENSORCAST_TEST_HANG_CONVERTER") == spec["mode"]:
        time.sleep(3600)  # test hook: a converter that hangs without a word
    try:
        data = convert(spec)
    except Exception as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        detail = lines[-1] if lines else type(exc).__name__
        print(f"{ERROR_PREFIX}{type(exc).__name__}: {detail}", file=sys.stderr)
        return 1
    Path(spec["output"]).write_bytes(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
