"""Child process that runs one TFLite conversion.

TensorFlow's converter can crash the whole process (full-int8 calibration of
a Keras 3 recurrent loop segfaults) and carries state between conversions in
one process (we saw a float32 model disagree with Keras after other models
had been built). So every conversion runs here, in a fresh interpreter, and
the parent turns a crash into a message. Usage: ``python -m sensorcast.convert._worker SPEC.json``.

int8 keeps an LSTM a loop by handing TFLite its fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op
(:func:`route_lstm_to_fused_op`); every other recurrence is unrolled.
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

    if type(model).__name__ not in ("Sequential", "Functional"):
        # clone_model only rebuilds these; a subclassed model has no graph to rebuild.
        raise ValueError(
            f"int8 needs a Sequential or functional model to rebuild; {type(model).__name__} "
            "is subclassed: it converts in the float modes (float32, float16, dynamic)"
        )

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


def _is(fn: Any, name: str) -> bool:
    return getattr(fn, "__name__", None) == name


def route_lstm_to_fused_op() -> None:
    """Make Keras 3's LSTM trace as a function TFLite fuses into ``UNIDIRECTIONAL_SEQUENCE_LSTM``.

    Keras 3 never emits the fused op (its LSTM is a WHILE loop, or unrolled). TFLite's
    converter fuses a function marked ``api_implements="lstm_..."`` with the argument and
    result order of tf_keras's ``standard_lstm``; Keras 3 asks its backend's ``lstm`` first
    (the cuDNN hook) and falls back to its own loop on ``NotImplementedError``. So the hook
    returns such a function for every LSTM the fused op computes exactly as Keras does
    (tanh, sigmoid gates, a bias, forwards, no mask) and declines the rest. The function's
    body is what the converter uses if it does not fuse (e.g. the states are returned):
    the recurrence unrolled, as before. Only for this child process.

    The fused op keeps its state tensors between invokes: a runtime must reset them
    before each window (``Interpreter.reset_all_variables()``), which the agent does.
    """
    import uuid

    import keras
    import tensorflow as tf

    def fused_lstm(  # Keras 3 backend.lstm signature
        inputs: Any,
        initial_state_h: Any,
        initial_state_c: Any,
        mask: Any,
        kernel: Any,
        recurrent_kernel: Any,
        bias: Any,
        activation: Any,
        recurrent_activation: Any,
        return_sequences: bool = False,
        go_backwards: bool = False,
        unroll: bool = False,
        time_major: bool = False,
    ) -> Any:
        fusable = not (mask is not None or bias is None or go_backwards or time_major)
        if not (fusable and _is(activation, "tanh") and _is(recurrent_activation, "sigmoid")):
            raise NotImplementedError  # Keras runs its own (unrolled) loop
        attributes = {
            "api_implements": f"lstm_{uuid.uuid4().hex}",
            "api_preferred_device": "CPU",
            "time_major": False,
            "go_backwards": False,
        }

        @tf.function(experimental_attributes=attributes, autograph=False)  # type: ignore[untyped-decorator]
        def standard_lstm(x: Any, h: Any, c: Any, w: Any, u: Any, b: Any) -> Any:
            steps = []
            for x_t in tf.unstack(x, axis=1):
                i, f, g, o = tf.split(tf.matmul(x_t, w) + tf.matmul(h, u) + b, 4, axis=1)
                c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
                h = tf.sigmoid(o) * tf.tanh(c)
                steps.append(h)
            # (last output, outputs, h, c, runtime): the fused op replaces the first two
            return h, tf.stack(steps, axis=1), h, c, tf.constant(0.0)

        weights = (tf.convert_to_tensor(v) for v in (kernel, recurrent_kernel, bias))
        last, outputs, h, c, _ = standard_lstm(inputs, initial_state_h, initial_state_c, *weights)
        return last, outputs if return_sequences else tf.expand_dims(last, 1), [h, c]

    keras.src.backend.lstm = fused_lstm


def _keras_converter(spec: dict[str, Any], mode: str) -> Any:
    """A converter for a Keras model: exported as a SavedModel with a fixed batch of 1."""
    import keras
    import tensorflow as tf

    window, n_features = spec["window"], spec["n_features"]
    batch = int(spec.get("batch", 1))
    if os.environ.get("SENSORCAST_IMPORTS"):  # the user's --import code, set by the parent
        from sensorcast.convert.load import import_user_code

        import_user_code(os.environ["SENSORCAST_IMPORTS"].split(os.pathsep))
    model = keras.models.load_model(spec["model"], compile=False)
    if mode == "int8":
        # Unrolled for every recurrence the fused op does not take; fusable LSTMs
        # ignore the flag and become one fused op each (no WHILE loop either way).
        model = unrolled_clone(model, window, n_features)
        route_lstm_to_fused_op()
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
