"""Phase 3: time and measure every bundle and reference, one process at a time.

Children: ``reference`` (Keras ``predict``, ``tf.function``, ONNX Runtime; one thread each),
``tflite`` (LiteRT or, in its own venv, tflite-runtime: a bare ``set_tensor``/``invoke``/
``get_tensor`` loop per configuration) and ``memory`` (RSS growth of one interpreter).
The ``tflite`` and ``memory`` children import only the standard library and numpy at the
top, so they run under the tflite-runtime venv (numpy < 2) too.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from bench.convert.grid import LITERT_CONFIGS, N_EVAL, TFLITE_RUNTIME_CONFIGS, errors, last_line
from bench.harness.children import Runner
from bench.harness.proc import rss_kb_self
from bench.harness.timing import time_calls

__all__ = ["child_memory", "child_reference", "child_tflite", "time_point"]


def child_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """Keras predict, tf.function and ONNX Runtime on one window, one thread each."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    data = np.load(spec["data"])
    x_eval, expected = data["eval"], data["expected"]
    x1 = x_eval[:1]
    budget, rounds = spec["budget"], spec["rounds"]
    model = keras.models.load_model(spec["model"], compile=False)
    out: dict[str, Any] = {}
    got = np.concatenate([model.predict(x_eval[i : i + 1], verbose=0) for i in range(N_EVAL)])
    out["keras_predict"] = {
        **errors(got, expected),
        **time_calls(lambda: model.predict(x1, verbose=0), budget, rounds),
    }
    fn = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((1, spec["window"], x1.shape[2]), tf.float32)],
    )
    got = np.concatenate([fn(x_eval[i : i + 1]).numpy() for i in range(N_EVAL)])
    out["tf_function"] = {
        **errors(got, expected),
        **time_calls(lambda: fn(x1).numpy(), budget, rounds),
    }
    for key in ("onnx", "onnx_unrolled"):
        if spec.get(key):
            out[key] = _onnx(spec[key], x_eval, expected, budget, rounds)
    return out


def _onnx(
    path: str, x_eval: np.ndarray, expected: np.ndarray, budget: float, rounds: int
) -> dict[str, Any]:
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        got = np.concatenate([sess.run(None, {name: x_eval[i : i + 1]})[0] for i in range(N_EVAL)])
        x1 = x_eval[:1]
        return {
            **errors(got, expected),
            **time_calls(lambda: sess.run(None, {name: x1}), budget, rounds),
        }
    except Exception as exc:
        return {"error": last_line(exc)}


def _interpreter(module: Any, path: str, xnnpack: bool, threads: int) -> Any:
    """An allocated interpreter; ``xnnpack`` False: the default delegate off."""
    kwargs: dict[str, Any] = {"model_path": path, "num_threads": threads}
    if not xnnpack:
        resolver = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        kwargs["experimental_op_resolver_type"] = resolver
    interp = module.Interpreter(**kwargs)
    interp.allocate_tensors()
    return interp


def _quantizers(
    inp: dict[str, Any], outp: dict[str, Any]
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """Float windows to the input's dtype, outputs back to float (int8: scale, zero point)."""

    def to_input(w: np.ndarray) -> np.ndarray:
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            q: np.ndarray = np.clip(np.round(w / scale + zero), -128, 127).astype(np.int8)
            return q
        return w.astype(inp["dtype"])

    def from_output(y: np.ndarray) -> np.ndarray:
        if outp["dtype"] == np.int8:
            scale, zero = outp["quantization"]
            f: np.ndarray = (y.astype(np.float64) - zero) * scale
            return f
        return y.astype(np.float64)

    return to_input, from_output


def _time_config(
    module: Any, path: str, config: list[Any], data: Any, budget: float, rounds: int
) -> dict[str, Any]:
    """Errors and the timing of one bundle in one configuration, or why it failed."""
    _, xnnpack, threads = config
    x_eval, expected = data["eval"], data["expected"]
    try:
        interp = _interpreter(module, path, xnnpack, threads)
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
        i_idx, o_idx = inp["index"], outp["index"]
        to_input, from_output = _quantizers(inp, outp)
        got = []
        for i in range(len(x_eval)):
            interp.set_tensor(i_idx, to_input(x_eval[i : i + 1]))
            interp.invoke()
            got.append(from_output(interp.get_tensor(o_idx)).reshape(1, -1))
        x1 = to_input(x_eval[:1])

        def once() -> None:
            interp.set_tensor(i_idx, x1)
            interp.invoke()
            interp.get_tensor(o_idx)

        return {**errors(np.concatenate(got), expected), **time_calls(once, budget, rounds)}
    except Exception as exc:  # a runtime that cannot load or run the model
        return {"error": last_line(exc)}


def child_tflite(spec: dict[str, Any]) -> dict[str, Any]:
    """Time bundles with one interpreter package (LiteRT or tflite-runtime): bare loop."""
    module = importlib.import_module(spec["module"])
    data = np.load(spec["data"])
    budget, rounds = spec["budget"], spec["rounds"]
    return {
        variant: {
            config[0]: _time_config(module, path, config, data, budget, rounds)
            for config in spec["configs"]
        }
        for variant, path in spec["models"].items()
    }


def child_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """RSS growth (KiB) from creating an interpreter for one bundle to after its first invoke."""
    module = importlib.import_module(spec["module"])
    x = np.load(spec["data"])["eval"][:1]
    before = rss_kb_self()
    interp = _interpreter(module, spec["model"], spec["xnnpack"], 1)
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interp.invoke()
    return {"rss_kb": rss_kb_self() - before}


def time_point(
    runner: Runner, point: dict[str, Any], timing: dict[str, Any], tflite_python: Optional[str]
) -> None:
    """References, LiteRT, tflite-runtime (if its venv works) and memory of one point."""
    d = Path(point["dir"])
    timing = {"data": str(d / "data.npz"), **timing}
    onnx = {k: point["prep"][k].get("path") for k in ("onnx", "onnx_unrolled")}
    spec = {"model": str(d / "model.keras"), "window": point["window"], **onnx, **timing}
    point["reference"] = runner.result("reference", spec, tag="reference", work=d)
    models = {v: r["path"] for v, r in point["variants"].items() if "path" in r}
    spec = {"module": "ai_edge_litert.interpreter", "models": models, **timing}
    point["litert"] = runner.result(
        "tflite", {**spec, "configs": LITERT_CONFIGS}, tag="litert", work=d
    )
    if tflite_python:
        spec = {**spec, "module": "tflite_runtime.interpreter", "configs": TFLITE_RUNTIME_CONFIGS}
        point["tflite_runtime"] = runner.result(
            "tflite", spec, tag="tflite-runtime", work=d, python=tflite_python
        )
    point["memory"] = {}
    for variant, path in models.items():
        for xnnpack in (True, False):
            label = "XNNPACK" if xnnpack else "noXNN"
            spec = {
                "module": "ai_edge_litert.interpreter",
                "model": path,
                "xnnpack": xnnpack,
                "data": timing["data"],
            }
            res = runner.result("memory", spec, tag=f"memory-{variant}-{label}", work=d)
            point["memory"].setdefault(variant, {})[label] = res.get("rss_kb", res)
