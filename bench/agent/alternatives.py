"""Question 6: the alternatives on the same models (Keras, ``tf.function``, ONNX Runtime, LiteRT).

One child with TensorFlow and ONNX Runtime at one intra/inter-op thread each; ONNX through
``tf2onnx.convert.from_function``, the model as exported (its LSTM an ONNX ``Loop``) and its
unrolled clone. The report puts them as ratios to the agent's whole path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.agent.context import DEMO_BUNDLE, Run
from bench.agent.path import stages
from bench.harness.markdown import fr, ratio, table, us
from bench.harness.paths import DEMO_DIR
from bench.harness.timing import timed_rounds

__all__ = ["child_alternatives", "measure", "render"]


def child_alternatives(spec: dict[str, Any]) -> dict[str, Any]:
    """µs per forecast of each alternative, per model in the spec; the versions."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf
    from sensorcast.agent.forecast.runtime import load_runtime

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    n, rounds = spec["n"], spec["rounds"]
    out: dict[str, Any] = {}
    litert = load_runtime("litert")
    for key, item in spec["models"].items():
        out[key] = _one(item, Path(spec["work"]) / key, n, rounds, litert)
    out["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        import onnxruntime as ort
        import tf2onnx

        out["versions"].update(onnxruntime=ort.__version__, tf2onnx=tf2onnx.__version__)
    except ImportError:
        pass
    return out


def _one(item: dict[str, str], stem: Path, n: int, rounds: int, litert: Any) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(item["keras"])
    w, feats = model.input_shape[1], model.input_shape[2]
    x = np.random.default_rng(5).standard_normal((1, w, feats)).astype(np.float32)
    res: dict[str, Any] = {}
    res["keras_predict"] = timed_rounds(
        lambda: model.predict(x, verbose=0), max(5, n // 50), rounds
    )
    fn = tf.function(lambda t: model(t, training=False))
    xt = tf.constant(x)
    fn(xt)
    res["tf_function"] = timed_rounds(lambda: fn(xt), max(10, n // 10), rounds)
    res["onnxruntime"] = _onnx(model, Path(f"{stem}.onnx"), x, n, rounds)
    try:  # the unrolled clone (no ONNX Loop), as bench/convert_bench.py exports it too
        from sensorcast.convert._worker import unrolled_clone

        clone = unrolled_clone(model, w, feats)
        res["onnxruntime_unrolled"] = _onnx(clone, Path(f"{stem}-unrolled.onnx"), x, n, rounds)
    except Exception as exc:  # recorded, the others go on
        res["onnxruntime_unrolled"] = {"error": str(exc).splitlines()[0][:200]}
    res["litert"] = _bare_litert(litert, item["bundle"], n, rounds)
    return res


def _onnx(model: Any, dest: Path, x: np.ndarray, n: int, rounds: int) -> dict[str, Any]:
    """ONNX Runtime on ``model`` exported with tf2onnx (1 thread, sequential), or the error."""
    try:
        import onnxruntime as ort
        import tensorflow as tf
        import tf2onnx

        sig = [tf.TensorSpec(x.shape, tf.float32, name="x")]
        tf2onnx.convert.from_function(
            tf.function(lambda t: model(t, training=False)),
            input_signature=sig,
            output_path=str(dest),
            opset=17,
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(str(dest), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return timed_rounds(lambda: sess.run(None, {name: x}), n, rounds)
    except Exception as exc:  # recorded, the others go on
        return {"error": (str(exc).splitlines() or [type(exc).__name__])[0][:200]}


def _bare_litert(litert: Any, bundle: str, n: int, rounds: int) -> dict[str, float]:
    """A bare LiteRT loop in the TensorFlow process."""
    from sensorcast.agent.forecast.manifest import read_bundle

    interp = litert.interpreter(read_bundle(Path(bundle)).model, 1)
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    xi = np.zeros(d_in["shape"], dtype=d_in["dtype"])
    a, b = d_in["index"], d_out["index"]

    def bare() -> None:
        interp.set_tensor(a, xi)
        interp.invoke()
        interp.get_tensor(b)

    return timed_rounds(bare, n, rounds)


def measure(run: Run) -> None:
    """Both models, in one TensorFlow child."""
    models = {"demo": {"keras": str(DEMO_DIR / "room.keras"), "bundle": str(DEMO_BUNDLE)}}
    if run.prep.get("lstm_keras") and run.prep.get("lstm_f32"):
        models["lstm"] = {"keras": run.prep["lstm_keras"], "bundle": run.prep["lstm_f32"]}
    n = run.n // 2 if run.quick else run.n  # Keras predict is about 1 ms a call
    spec = {"models": models, "work": str(run.work), "n": n, "rounds": run.rounds}
    run.r["alternatives"] = run.child("alternatives", spec, timeout_s=1200)


WAYS = (
    ("keras_predict", "Keras `model.predict`"),
    ("tf_function", "`tf.function` call"),
    ("onnxruntime", "ONNX Runtime (tf2onnx, LSTM as an ONNX Loop)"),
    ("onnxruntime_unrolled", "ONNX Runtime (tf2onnx, unrolled clone)"),
    ("litert", "LiteRT bare invoke (in the TensorFlow process)"),
    ("tflite_runtime", "tflite-runtime bare invoke (float32 bundle)"),
    ("forecast", "agent `Forecaster.predict`"),
    ("agent_path", "**agent whole path**"),
)


def _cell(r: dict[str, Any], way: str, model: str) -> str:
    agent = stages(r, model, "after")
    if way in ("forecast", "agent_path"):
        d = agent.get(way)
    elif way == "tflite_runtime":
        d = ((r.get("path_tflite", {}).get(model) or {}).get("stages") or {}).get("bare_invoke")
    else:
        d = ((r.get("alternatives") or {}).get(model) or {}).get(way)
    rr = ratio(d, agent.get("agent_path"))
    return f"{us(d)} = {fr(rr)}" if rr is not None else us(d)


def render(r: dict[str, Any]) -> list[str]:
    """Section 6."""
    rows = [[desc, *(_cell(r, way, mk) for mk in r["models"])] for way, desc in WAYS]
    out = [
        "## 6. Alternatives on the same models, as ratios to the agent",
        "",
        "µs per forecast of one window (batch 1). TensorFlow and ONNX Runtime with 1 "
        "intra/inter-op thread; ONNX via `tf2onnx.convert.from_function`. Ratio = alternative / "
        "the agent's whole path (after); `forecast` = the agent's `Forecaster.predict` alone.",
        "",
        *table(["way", *r["models"].values()], rows),
    ]
    versions = (r.get("alternatives") or {}).get("versions")
    if versions:
        out += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]
    return [*out, ""]
