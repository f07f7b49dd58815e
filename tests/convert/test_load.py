"""Models the converter could not load before: the user's own classes (``--import``), the
TensorFlow tutorial's subclassed ``FeedBack`` model, two-input models; and ops the agent's
runtimes cannot run (Flex, TensorList), refused by name, with the op histogram recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.convert import ConvertError
from sensorcast.convert.cli import main as convert_main
from sensorcast.convert.load import IMPORTS_ENV, import_user_code, load_source
from sensorcast.convert.ops import check_runnable, inspect_ops

pytestmark = pytest.mark.convert

W, F, H = 12, 2, 4

#: The TensorFlow time-series tutorial's autoregressive model, as the tutorial writes it
#: (``num_features`` a global there too), and the same with what saving to .keras needs.
FEEDBACK = '''
import keras
import tensorflow as tf

num_features = 2


class FeedBack(keras.Model):
    def __init__(self, units, out_steps):
        super().__init__()
        self.out_steps = out_steps
        self.units = units
        self.lstm_cell = keras.layers.LSTMCell(units)
        self.lstm_rnn = keras.layers.RNN(self.lstm_cell, return_state=True)
        self.dense = keras.layers.Dense(num_features)

    def warmup(self, inputs):
        x, *state = self.lstm_rnn(inputs)
        prediction = self.dense(x)
        return prediction, state

    def call(self, inputs, training=None):
        predictions = []
        prediction, state = self.warmup(inputs)
        predictions.append(prediction)
        for n in range(1, self.out_steps):
            x = prediction
            x, state = self.lstm_cell(x, states=state, training=training)
            prediction = self.dense(x)
            predictions.append(prediction)
        predictions = tf.stack(predictions)
        predictions = tf.transpose(predictions, [1, 0, 2])
        return predictions


@keras.saving.register_keras_serializable(package="tutorial")
class SavableFeedBack(FeedBack):
    def get_config(self):
        return {"units": self.units, "out_steps": self.out_steps}


class Scale(keras.layers.Layer):
    """A custom layer without the decorator: saved under its class name."""

    def call(self, x):
        return x * 0.5
'''

#: The user's training script: builds the models with the module above and saves them.
TRAIN = """
import sys
import keras
import numpy as np
import tensorflow as tf
from feedback import FeedBack, SavableFeedBack, Scale

x = np.random.default_rng(0).normal(size=(8, {w}, {f})).astype("float32")
tutorial = FeedBack(8, {h})
tutorial(x)
try:
    tutorial.save("tutorial.keras")
except NotImplementedError:
    print("tutorial FeedBack: no get_config, cannot be saved as .keras")
tutorial.export("feedback_b1", input_signature=[tf.TensorSpec((1, {w}, {f}), tf.float32)])
model = SavableFeedBack(8, {h})
model(x)
model.save("feedback.keras")
inputs = keras.Input(({w}, {f}))
scaled = keras.Model(inputs, keras.layers.Dense({h})(keras.layers.LSTM(4)(Scale()(inputs))))
scaled.save("scale.keras")
"""


@pytest.fixture(scope="module")
def user_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the user's feedback.py and what their script saved with it, made in
    a process of its own so this one knows none of their classes."""
    where = tmp_path_factory.mktemp("user")
    (where / "feedback.py").write_text(FEEDBACK)
    (where / "train.py").write_text(TRAIN.format(w=W, f=F, h=H))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "train.py"], cwd=where, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "cannot be saved as .keras" in done.stdout
    return where


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Whatever a test imports with --import stays out of the next test: the environment,
    the path and the classes it made known to Keras."""
    import keras

    monkeypatch.delenv(IMPORTS_ENV, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    known = keras.saving.get_custom_objects()
    before = dict(known)
    yield
    known.clear()
    known.update(before)


def _convert(model: Path, out: Path, *extra: str) -> int:
    return convert_main(
        [str(model), "-o", str(out), "--quiet", "--features", "a,b", "--period", "60", *extra]
    )


def test_import_errors_name_the_file_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_imports: None
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConvertError, match=r"^--import nowhere/layers\.py: file not found$"):
        import_user_code(["nowhere/layers.py"])
    with pytest.raises(ConvertError, match="no module 'my_layers' on the Python path or in the"):
        import_user_code(["my_layers"])
    (tmp_path / "broken.py").write_text("import keras\n\nraise RuntimeError('no data.csv here')\n")
    with pytest.raises(ConvertError) as raised:
        import_user_code(["broken.py"])
    message = str(raised.value)
    assert "\n" not in message
    assert "importing it raised RuntimeError: no data.csv here" in message
    assert f"at {tmp_path / 'broken.py'}:3;" in message
    (tmp_path / "typo.py").write_text("def f(:\n    pass\n")
    with pytest.raises(ConvertError, match=r"raised SyntaxError: .* at .*typo\.py:1;"):
        import_user_code(["typo"])
    assert IMPORTS_ENV not in os.environ


def test_without_import_the_hint_names_both_fixes(user_models: Path) -> None:
    with pytest.raises(ConvertError) as raised:
        load_source(user_models / "feedback.keras")
    message = str(raised.value)
    assert "class 'SavableFeedBack' is the model's own code: pass --import" in message
    assert "register_keras_serializable" in message and "get_config" in message
    assert f"input_signature=[tf.TensorSpec((1, {W}, {F}), tf.float32)]" in message


def test_import_of_a_module_knows_undecorated_classes(
    user_models: Path, monkeypatch: pytest.MonkeyPatch, clean_imports: None
) -> None:
    monkeypatch.chdir(user_models)  # a module name: imported from the current directory
    (user_models / "other.py").write_text("X = 1\n")
    import_user_code(["other.py"])
    with pytest.raises(ConvertError, match=r"class 'Scale' is not defined by --import /.*other"):
        load_source(user_models / "scale.keras")
    import_user_code(["feedback"])
    assert os.environ[IMPORTS_ENV] == "feedback"
    source = load_source(user_models / "scale.keras")
    assert (source.shape.window, source.shape.n_features, source.shape.horizon) == (W, F, H)
    assert source.recurrent()
    import_user_code([])
    assert IMPORTS_ENV not in os.environ


def test_feedback_keras_converts_with_import(
    user_models: Path, tmp_path: Path, clean_imports: None
) -> None:
    out = tmp_path / "feedback.tflite"
    assert (
        _convert(user_models / "feedback.keras", out, "--import", str(user_models / "feedback.py"))
        == 0
    )
    m = read_bundle(out).manifest
    assert (m.window, m.horizon, m.targets) == (W, H, ("a", "b"))
    assert m.accuracy is not None and m.accuracy.mae < 1e-4
    assert m.recurrence == "loop" and m.ops["WHILE"] == 1


def test_feedback_saved_model_with_a_batch_of_one_converts_in_float16(
    user_models: Path, tmp_path: Path
) -> None:
    """What the hint says to do for the tutorial's model, which cannot be saved as .keras."""
    assert load_source(user_models / "feedback_b1").recurrent()  # a loop in its graph
    out = tmp_path / "feedback.tflite"
    assert _convert(user_models / "feedback_b1", out, "--quantize", "float16") == 0
    m = read_bundle(out).manifest
    assert m.quantization == "float16" and m.horizon == H
    assert m.accuracy is not None and m.accuracy.mae < 1e-2


def test_two_input_model_is_refused_with_the_wrapper_recipe(tmp_path: Path) -> None:
    import keras
    from sensorcast.convert.quantize import convert_in_child

    a, b = keras.Input((W, 2)), keras.Input((W, 1))
    hidden = keras.layers.LSTM(4)(keras.layers.Concatenate()([a, b]))
    two = keras.Model([a, b], keras.layers.Dense(H)(hidden))
    two.save(tmp_path / "two.keras")
    with pytest.raises(ConvertError) as raised:
        load_source(tmp_path / "two.keras")
    assert "has 2 inputs and 1 outputs" in str(raised.value)
    assert "y = model([x[..., :F1], x[..., F1:]])" in str(raised.value)

    # The recipe, as the message gives it: one (window, 3) input, sliced for the model.
    x = keras.Input((W, 3))
    keras.Model(x, two([x[..., :2], x[..., 2:]])).save(tmp_path / "one.keras")
    source = load_source(tmp_path / "one.keras")
    assert (source.shape.window, source.shape.n_features) == (W, 3)
    tflite = convert_in_child(source, "float32")
    check_runnable(tflite, "float32")
    windows = np.random.default_rng(1).normal(size=(1, W, 3)).astype(np.float32)
    interp = _interpreter(tflite)
    interp.set_tensor(interp.get_input_details()[0]["index"], windows)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    want = two.predict([windows[..., :2], windows[..., 2:]], verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-5)


def _interpreter(tflite: bytes) -> Any:
    from sensorcast.agent.forecast.runtime import load_runtime

    interp = load_runtime().interpreter(tflite)
    interp.allocate_tensors()
    return interp


def _tflite(fn: Any, **options: Any) -> bytes:
    """Convert a ``tf.function`` as the test needs it (test setup, not the converter's path)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    for name, value in options.items():
        setattr(converter, name, value)
    result: bytes = converter.convert()
    return result


def test_a_flex_op_is_refused_by_name() -> None:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, W, 1), tf.float32)])
    def erf(x: Any) -> Any:
        return tf.reduce_mean(tf.math.erf(x), axis=1)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([erf.get_concrete_function()])
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    tflite = converter.convert()
    assert inspect_ops(tflite).histogram["FlexErf"] == 1
    with pytest.raises(ConvertError) as raised:
        check_runnable(tflite, "float16")
    assert str(raised.value).startswith(
        "the float16 model needs op FlexErf, which the agent's runtimes (LiteRT, "
        "tflite-runtime) cannot run"
    )


def test_tensor_list_ops_are_refused_with_the_export_fix(tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((W, 1)), keras.layers.LSTM(8), keras.layers.Dense(H)])
    model.export(str(tmp_path / "free_batch"), verbose=False)  # batch None: TensorList ops
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "free_batch"))
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    converter._experimental_lower_tensor_list_ops = False
    tflite = converter.convert()
    assert any(name.startswith("FlexTensorList") for name in inspect_ops(tflite).histogram)
    with pytest.raises(ConvertError) as raised:
        check_runnable(tflite, "float32")
    message = str(raised.value)
    assert message.startswith("the float32 model needs op FlexTensorList")
    assert f"model.export(DIR, input_signature=[tf.TensorSpec((1, {W}, 1), tf.float32)])" in message


def test_recurrence_is_loop_unrolled_or_none() -> None:
    import keras
    import tensorflow as tf

    spec = [tf.TensorSpec((1, W, 1), tf.float32)]

    def of(*layers: Any) -> Any:
        model = keras.Sequential([keras.Input((W, 1)), *layers])
        return tf.function(lambda x: model(x), input_signature=spec)

    loop = inspect_ops(_tflite(of(keras.layers.LSTM(8), keras.layers.Dense(H))), recurrent=True)
    assert loop.recurrence == "loop" and loop.histogram["WHILE"] == 1
    unrolled = _tflite(of(keras.layers.LSTM(8, unroll=True), keras.layers.Dense(H)))
    assert inspect_ops(unrolled, recurrent=True).recurrence == "unrolled"
    dense = inspect_ops(_tflite(of(keras.layers.Flatten(), keras.layers.Dense(H))))
    assert dense.recurrence == "none"
    assert dense.histogram == {"RESHAPE": 1, "FULLY_CONNECTED": 1}
    check_runnable(unrolled, "float32")  # builtins only: runnable
    # "fused": tests/convert/test_int8.py, on an int8 bundle the converter made.
