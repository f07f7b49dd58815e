#!/usr/bin/env python3
"""Converter benchmark: size, error and speed of every way sensorcast can convert an LSTM.

Run from the repository root:

    .venv/bin/python bench/convert_bench.py            # the 9-point grid, ~15-25 min on 2 cores
    .venv/bin/python bench/convert_bench.py --quick    # 2 small points, a smoke run

It writes ``bench/RESULTS-convert.md``. See ``bench/README.md`` for what is measured and how.

The same file is also the child processes it starts (``--child KIND SPEC.json``):
``prep`` (train the model, Keras reference outputs, ONNX exports), ``unrolled`` (one
experimental conversion of the unrolled model), ``reference`` (Keras / tf.function /
ONNX Runtime timings) and ``tflite`` (LiteRT or tflite-runtime timings). The ``tflite``
child also runs under the tflite-runtime venv (numpy < 2), so this module imports only
the standard library and numpy at the top.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "RESULTS-convert.md"
DEFAULT_TFLITE_PYTHON = ROOT / ".venv-tflite" / "bin" / "python"

UNITS = (16, 64, 128)
WINDOWS = (24, 48, 168)
QUICK_POINTS = ((16, 24), (64, 48))
N_FEATURES = 3
HORIZON = 12
N_TRAIN = 4096  #: windows for the one training epoch (128 steps of 32)
N_CALIB = 100  #: windows for int8 calibration
N_EVAL = 50  #: windows the error is measured on
SEED = 20240601
BUDGET = 0.02  #: the error budget of question 4: MAE <= 2 % of the Keras outputs' std

PROJECT_MODES = ("float32", "float16", "dynamic", "int8")
UNROLLED_VARIANTS = ("float32-unrolled", "float16-unrolled", "dynamic-unrolled")
VARIANTS = PROJECT_MODES + UNROLLED_VARIANTS
#: Interpreter configurations: (label, XNNPACK default delegate on, num_threads).
LITERT_CONFIGS = (("1T", True, 1), ("1T-noXNN", False, 1), ("2T", True, 2), ("2T-noXNN", False, 2))
TFLITE_RUNTIME_CONFIGS = (("1T", True, 1), ("1T-noXNN", False, 1))
CONFIG_TITLES = {
    "1T": "1 thread ms",
    "1T-noXNN": "1 thread, no XNNPACK ms",
    "2T": "2 threads ms",
    "2T-noXNN": "2 threads, no XNNPACK ms",
}
CHILD_TIMEOUT_S = 900


# --------------------------------------------------------------------------- shared helpers


def time_calls(fn: Callable[[], Any], budget_s: float, rounds: int) -> dict[str, Any]:
    """Mean ms per call of ``fn``: warm up, then ``rounds`` rounds of >= ``budget_s`` each.

    Returns the median of the rounds' means (``ms``) and the rounds themselves.
    A round also makes at least 10 calls, so very slow calls stretch it.
    """
    start, n = time.perf_counter(), 0
    while n < 5 or (time.perf_counter() - start < 0.1 and n < 2000):  # warm-up
        fn()
        n += 1
    means, calls = [], 0
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= budget_s and n >= 10:
                break
        means.append(1000.0 * elapsed / n)
        calls += n
    return {"ms": statistics.median(means), "rounds_ms": means, "calls": calls}


def errors(got: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """MAE and max abs error, absolute and relative to the std of the expected outputs."""
    err = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    scale = float(np.std(expected)) or 1.0
    return {
        "mae": float(err.mean()),
        "max": float(err.max()),
        "rel_mae": float(err.mean()) / scale,
        "rel_max": float(err.max()) / scale,
    }


def synthetic_series(n: int = 8000, seed: int = SEED) -> np.ndarray:
    """Hourly-like series of 3 features: daily and weekly cycles plus noise, ``(n, 3)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    day, week = 2 * np.pi * t / 24, 2 * np.pi * t / 168
    f0 = np.sin(day) + 0.5 * np.sin(week + 1.0) + 0.1 * rng.standard_normal(n)
    f1 = 0.7 * np.cos(day) - 0.3 * f0 + 0.1 * rng.standard_normal(n)
    f2 = 0.5 * np.sin(2 * day + 0.3) + 0.2 * rng.standard_normal(n)
    return np.stack([f0, f1, f2], axis=1).astype(np.float32)


def windows_from(
    series: np.ndarray, window: int, count: int, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` evenly spaced windows starting in ``[lo, hi)`` and the next 12 values of f0."""
    starts = np.linspace(lo, hi - window - HORIZON, count).astype(int)
    x = np.stack([series[s : s + window] for s in starts])
    y = np.stack([series[s + window : s + window + HORIZON, 0] for s in starts])
    return x.astype(np.float32), y.astype(np.float32)


def run_child(
    kind: str, spec: dict[str, Any], workdir: Path, python: Optional[str] = None
) -> dict[str, Any]:
    """Run this file as a ``kind`` child on ``spec``; return its JSON result or the failure."""
    tag = spec.get("tag", kind)
    spec_path = workdir / f"{tag}.spec.json"
    out_path = workdir / f"{tag}.out.json"
    spec = {**spec, "out": str(out_path)}
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [python or sys.executable, str(Path(__file__).resolve()), "--child", kind, str(spec_path)]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return {"error": f"{kind} child took longer than {CHILD_TIMEOUT_S} s and was stopped"}
    except OSError as exc:
        return {"error": f"{kind} child could not start: {exc}"}
    seconds = time.monotonic() - started
    (workdir / f"{tag}.stderr.txt").write_text(proc.stderr)
    if proc.returncode < 0:
        import signal

        name = signal.Signals(-proc.returncode).name
        return {"error": f"crashed ({name})", "seconds": seconds}
    if proc.returncode != 0 or not out_path.exists():
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        return {"error": (lines[-1] if lines else f"exit code {proc.returncode}")[:300]}
    result: dict[str, Any] = json.loads(out_path.read_text())
    result.setdefault("seconds", seconds)
    return result


def last_line(exc: BaseException) -> str:
    """The informative line of an exception: the interpreter's "Didn't find op" or the last."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    pick = next((ln for ln in lines if "Didn't find op" in ln), lines[-1] if lines else "")
    pick = pick.split(". An older version")[0]
    return f"{type(exc).__name__}: {pick}"[:300]


# --------------------------------------------------------------------------- children


def child_prep(spec: dict[str, Any]) -> dict[str, Any]:
    """Train the model 1 epoch, save it, its reference outputs, and its ONNX exports."""
    import keras
    import tensorflow as tf

    units, window = spec["units"], spec["window"]
    work = Path(spec["dir"])
    keras.utils.set_random_seed(SEED + 1000 * units + window)
    series = synthetic_series()
    n = len(series)
    x_train, y_train = windows_from(series, window, N_TRAIN, 0, int(0.7 * n))
    x_cal, _ = windows_from(series, window, N_CALIB, int(0.7 * n), int(0.85 * n))
    x_eval, _ = windows_from(series, window, N_EVAL, int(0.85 * n), n)

    model = keras.Sequential(
        [
            keras.Input((window, N_FEATURES)),
            keras.layers.LSTM(units),
            keras.layers.Dense(HORIZON),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    started = time.monotonic()
    hist = model.fit(x_train, y_train, epochs=1, batch_size=32, shuffle=True, verbose=0)
    train_s = time.monotonic() - started
    path = work / "model.keras"
    model.save(path)

    # The reference: Keras predict of the saved model, as the converter sees it.
    loaded = keras.models.load_model(path, compile=False)
    expected = np.asarray(loaded.predict(x_eval, batch_size=N_EVAL, verbose=0))
    np.savez(work / "data.npz", calib=x_cal, eval=x_eval, expected=expected)

    out: dict[str, Any] = {
        "params": int(model.count_params()),
        "train_loss": float(hist.history["loss"][-1]),
        "train_s": train_s,
        "output_std": float(np.std(expected)),
        "keras_bytes": path.stat().st_size,
    }
    sig = [tf.TensorSpec((1, window, N_FEATURES), tf.float32)]

    def export_onnx(m: Any, dest: Path) -> dict[str, Any]:
        """Keras 3's own ONNX export first; tf2onnx directly if it fails."""
        tried: list[str] = []
        t0 = time.monotonic()
        try:
            m.export(str(dest), format="onnx", input_signature=sig, verbose=False)
            return {
                "path": str(dest),
                "route": "keras model.export(format='onnx')",
                "seconds": time.monotonic() - t0,
                "failed": tried,
            }
        except Exception as exc:  # record why, then try the other route
            tried.append(f"keras export: {last_line(exc)}")
        t0 = time.monotonic()
        try:
            import tf2onnx

            spec_ = (tf.TensorSpec((1, window, N_FEATURES), tf.float32, name="x"),)
            fn = tf.function(lambda x: m(x, training=False), input_signature=spec_)
            tf2onnx.convert.from_function(fn, input_signature=spec_, output_path=str(dest))
            return {
                "path": str(dest),
                "route": "tf2onnx.convert.from_function",
                "seconds": time.monotonic() - t0,
                "failed": tried,
            }
        except Exception as exc:
            tried.append(f"tf2onnx: {last_line(exc)}")
        return {"error": "; ".join(tried), "failed": tried}

    out["onnx"] = export_onnx(loaded, work / "model.onnx")
    try:
        from convert._worker import unrolled_clone

        clone = unrolled_clone(loaded, window, N_FEATURES)
        out["onnx_unrolled"] = export_onnx(clone, work / "model-unrolled.onnx")
    except Exception as exc:
        out["onnx_unrolled"] = {"error": f"unrolled clone: {last_line(exc)}"}
    return out


def child_unrolled(spec: dict[str, Any]) -> dict[str, Any]:
    """Convert the model with its LSTM unrolled (no WHILE loop), float32/float16/dynamic.

    The clone is the project's own ``convert._worker.unrolled_clone``: Keras
    ``clone_model`` with ``unroll=True`` and a fixed (1, W, F) input, then ``set_weights``;
    exported as a SavedModel with that signature and converted from it.
    """
    import keras
    import tensorflow as tf

    from convert._worker import unrolled_clone

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
    Path(spec["output"]).write_bytes(converter.convert())
    return {}


def child_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """Keras predict, tf.function and ONNX Runtime on one window, one thread each."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    window = spec["window"]
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
        input_signature=[tf.TensorSpec((1, window, N_FEATURES), tf.float32)],
    )
    got = np.concatenate([fn(x_eval[i : i + 1]).numpy() for i in range(N_EVAL)])
    out["tf_function"] = {
        **errors(got, expected),
        **time_calls(lambda: fn(x1).numpy(), budget, rounds),
    }

    import onnxruntime as ort

    for key in ("onnx", "onnx_unrolled"):
        path = spec.get(key)
        if not path:
            continue
        try:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            got = np.concatenate(
                [sess.run(None, {name: x_eval[i : i + 1]})[0] for i in range(N_EVAL)]
            )
            out[key] = {
                **errors(got, expected),
                **time_calls(lambda s=sess, n=name: s.run(None, {n: x1}), budget, rounds),
            }
        except Exception as exc:
            out[key] = {"error": last_line(exc)}
    return out


def child_tflite(spec: dict[str, Any]) -> dict[str, Any]:
    """Time bundles with one interpreter package (LiteRT or tflite-runtime): bare loop."""
    import importlib

    module = importlib.import_module(spec["module"])
    data = np.load(spec["data"])
    x_eval, expected = data["eval"], data["expected"]
    budget, rounds = spec["budget"], spec["rounds"]
    results: dict[str, Any] = {}
    for variant, path in spec["models"].items():
        per: dict[str, Any] = {}
        for label, xnnpack, threads in spec["configs"]:
            kwargs: dict[str, Any] = {"model_path": path, "num_threads": threads}
            if not xnnpack:
                kwargs["experimental_op_resolver_type"] = (
                    module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                )
            try:
                interp = module.Interpreter(**kwargs)
                interp.allocate_tensors()
                inp = interp.get_input_details()[0]
                outp = interp.get_output_details()[0]
                i_idx, o_idx = inp["index"], outp["index"]

                def to_input(w: np.ndarray, d: dict[str, Any] = inp) -> np.ndarray:
                    if d["dtype"] == np.int8:
                        scale, zero = d["quantization"]
                        return np.clip(np.round(w / scale + zero), -128, 127).astype(np.int8)
                    return w.astype(d["dtype"])

                def from_output(y: np.ndarray, d: dict[str, Any] = outp) -> np.ndarray:
                    if d["dtype"] == np.int8:
                        scale, zero = d["quantization"]
                        return (y.astype(np.float64) - zero) * scale
                    return y.astype(np.float64)

                got = []
                for i in range(len(x_eval)):
                    interp.set_tensor(i_idx, to_input(x_eval[i : i + 1]))
                    interp.invoke()
                    got.append(from_output(interp.get_tensor(o_idx)).reshape(1, -1))
                x1 = to_input(x_eval[:1])

                def once(it: Any = interp, a: int = i_idx, b: int = o_idx, x: Any = x1) -> None:
                    it.set_tensor(a, x)
                    it.invoke()
                    it.get_tensor(b)

                per[label] = {
                    **errors(np.concatenate(got), expected),
                    **time_calls(once, budget, rounds),
                }
                del interp
            except Exception as exc:  # a runtime that cannot load or run the model
                per[label] = {"error": last_line(exc)}
        results[variant] = per
    return results


def rss_kb() -> int:
    """This process's resident set size in KiB (Linux), 0 elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """RSS growth from creating an interpreter for one bundle to after its first invoke."""
    import importlib

    module = importlib.import_module(spec["module"])
    x = np.load(spec["data"])["eval"][:1]
    before = rss_kb()
    kwargs: dict[str, Any] = {"model_path": spec["model"], "num_threads": 1}
    if not spec["xnnpack"]:
        kwargs["experimental_op_resolver_type"] = (
            module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    interp = module.Interpreter(**kwargs)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interp.invoke()
    return {"rss_kb": rss_kb() - before}


CHILDREN = {
    "memory": child_memory,
    "prep": child_prep,
    "unrolled": child_unrolled,
    "reference": child_reference,
    "tflite": child_tflite,
}


def child_main(kind: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = CHILDREN[kind](spec)
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- parent


def machine_info(tflite_python: Path) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0
    packages = {}
    for dist in (
        "tensorflow-cpu",
        "tensorflow",
        "keras",
        "ai-edge-litert",
        "numpy",
        "onnxruntime",
        "onnx",
        "tf2onnx",
        "protobuf",
    ):
        with contextlib.suppress(PackageNotFoundError):
            packages[dist] = version(dist)
    tflite_env = "not available"
    if tflite_python.exists():
        probe = subprocess.run(
            [
                str(tflite_python),
                "-c",
                "import sys, numpy, tflite_runtime; print(sys.version.split()[0], "
                "tflite_runtime.__version__, numpy.__version__)",
            ],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            py, tfl, npv = probe.stdout.split()
            tflite_env = f"tflite-runtime {tfl} with numpy {npv} (Python {py}, {tflite_python})"
        else:
            tflite_env = f"broken: {probe.stderr.strip().splitlines()[-1:]}"
    commit = "unknown"
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %ci %s"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "convert", "agent"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if head:
            commit = head + (" (with uncommitted changes in convert/ or agent/)" if dirty else "")
    except OSError:
        pass
    return {
        "commit": commit,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "tflite_env": tflite_env,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def bundle_bytes(tflite: bytes, point: dict[str, Any], variant: str) -> tuple[bytes, list[str]]:
    """The project's bundle (manifest embedded) for ``tflite``, and the converter's warnings."""
    from agent.manifest import Manifest
    from convert.bundle import embed_manifest
    from convert.cli import mode_warnings
    from convert.load import file_sha256

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


def convert_point_variant(point: dict[str, Any], variant: str) -> dict[str, Any]:
    """Convert one variant in a child process; returns size, time, path or the error."""
    from convert import ConvertError
    from convert.quantize import convert_in_child

    work = Path(point["dir"])
    started = time.monotonic()
    if variant in PROJECT_MODES:
        calib = np.load(work / "data.npz")["calib"] if variant == "int8" else None
        try:
            tflite = convert_in_child(point["source"], variant, calib)
        except ConvertError as exc:
            return {"error": str(exc)[:400], "convert_s": time.monotonic() - started}
    else:
        sub = work / f"conv-{variant}"
        sub.mkdir(exist_ok=True)
        res = run_child(
            "unrolled",
            {
                "tag": variant,
                "model": str(work / "model.keras"),
                "window": point["window"],
                "variant": variant,
                "workdir": str(sub),
                "output": str(sub / "model.tflite"),
            },
            sub,
        )
        if "error" in res:
            return {"error": res["error"], "convert_s": time.monotonic() - started}
        tflite = (sub / "model.tflite").read_bytes()
        shutil.rmtree(sub / "saved", ignore_errors=True)
    return {"tflite": tflite, "convert_s": time.monotonic() - started}


def fmt_ms(entry: Optional[dict[str, Any]]) -> str:
    if not entry:
        return "—"
    if "error" in entry:
        return "error¹"
    ms = entry["ms"]
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def fmt_rel(value: Optional[float]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value == 0:
        return "0"
    return f"{100 * value:.2g} %"


def fmt_size(n: Optional[int]) -> str:
    return f"{n:,}" if n else "—"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 small grid points, a smoke run")
    p.add_argument("--points", help="grid points as UNITSxWINDOW,... (e.g. 16x24,128x168)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown results file")
    p.add_argument("--workdir", type=Path, help="keep models, bundles and raw JSON here")
    p.add_argument(
        "--tflite-python",
        type=Path,
        default=DEFAULT_TFLITE_PYTHON,
        help="python of the tflite-runtime venv (numpy < 2)",
    )
    p.add_argument("--budget", type=float, default=0.3, help="seconds per timing round")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (median reported)")
    p.add_argument("--jobs", type=int, default=2, help="conversions/preparations at a time")
    p.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    p.add_argument("--render-from", type=Path, help="re-write --out from a kept results.json")
    args = p.parse_args(argv)
    if args.child:
        return child_main(*args.child)
    if args.render_from:
        raw = json.loads(args.render_from.read_text())
        saved = argparse.Namespace(**{**vars(args), **raw["args"]})
        saved.rounds, saved.budget = int(saved.rounds), float(saved.budget)
        text = render(raw["machine"], raw["points"], raw["phases"], saved, raw["command"])
        args.out.write_text(text)
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)  # convert_in_child runs ``python -m convert._worker`` from here
    begun = time.monotonic()

    if args.points:
        grid = [tuple(int(v) for v in item.split("x")) for item in args.points.split(",")]
    elif args.quick:
        grid = list(QUICK_POINTS)
    else:
        grid = [(u, w) for u in UNITS for w in WINDOWS]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sensorcast-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log = print
    log(f"convert_bench: {len(grid)} grid points, work in {workdir}", flush=True)
    info = machine_info(args.tflite_python)

    points: list[dict[str, Any]] = []
    for units, window in grid:
        d = workdir / f"lstm{units}-w{window}"
        d.mkdir(exist_ok=True)
        points.append(
            {
                "units": units,
                "window": window,
                "dir": str(d),
                "name": f"LSTM({units}), window {window}",
            }
        )

    # 1. Train and export each model (children, two at a time).
    t0 = time.monotonic()

    def prep(point: dict[str, Any]) -> None:
        point["prep"] = run_child("prep", {"tag": "prep", **point}, Path(point["dir"]))
        log(f"  prepared {point['name']} ({point['prep'].get('seconds', 0):.0f} s)", flush=True)

    log("1/3 training 1 epoch and exporting to ONNX ...", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(prep, points))
    failed = [p["name"] + ": " + p["prep"]["error"] for p in points if "error" in p["prep"]]
    if failed:
        print("prep failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    prep_s = time.monotonic() - t0

    # 2. Convert: the project's four modes with its own code, and the unrolled variants.
    import keras
    import tensorflow as tf

    from convert.load import load_source

    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    for point in points:
        point["source"] = load_source(Path(point["dir"]) / "model.keras")
        point["versions"] = versions
        point["variants"] = {}
    jobs = [(pt, v) for pt in points for v in VARIANTS]
    heavy = {"int8": 3, "float32-unrolled": 2, "float16-unrolled": 2, "dynamic-unrolled": 2}
    jobs.sort(key=lambda j: -j[0]["window"] * heavy.get(j[1], 1))  # longest first
    t0 = time.monotonic()
    log(f"2/3 converting {len(jobs)} models, {args.jobs} at a time ...", flush=True)

    def convert(job: tuple[dict[str, Any], str]) -> None:
        point, variant = job
        res = convert_point_variant(point, variant)
        point["variants"][variant] = res
        status = res.get("error", f"{len(res.get('tflite', b''))} bytes")
        log(f"  {point['name']} {variant}: {status[:120]} ({res['convert_s']:.0f} s)", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(convert, jobs))
    for point in points:
        for variant, res in point["variants"].items():
            tflite = res.pop("tflite", None)
            if tflite is None:
                continue
            try:
                bundle, warnings = bundle_bytes(tflite, point, variant)
            except Exception as exc:
                res["error"] = f"embedding the manifest failed: {last_line(exc)}"
                continue
            path = Path(point["dir"]) / f"{variant}.tflite"
            path.write_bytes(bundle)
            res.update(
                path=str(path),
                tflite_bytes=len(tflite),
                bundle_bytes=len(bundle),
                warnings=warnings,
                **graph_stats(tflite),
            )
    convert_s = time.monotonic() - t0

    # 3. Time, one thing at a time: nothing else runs while a measurement does.
    t0 = time.monotonic()
    log("3/3 timing (one process at a time) ...", flush=True)
    have_tflite_runtime = not info["tflite_env"].startswith(("not available", "broken"))
    for point in points:
        d = Path(point["dir"])
        data = str(d / "data.npz")
        onnx = {k: point["prep"][k].get("path") for k in ("onnx", "onnx_unrolled")}
        timing = {"data": data, "budget": args.budget, "rounds": args.rounds}
        point["reference"] = run_child(
            "reference",
            {
                "tag": "reference",
                "model": str(d / "model.keras"),
                "window": point["window"],
                **onnx,
                **timing,
            },
            d,
        )
        models = {v: r["path"] for v, r in point["variants"].items() if "path" in r}
        point["litert"] = run_child(
            "tflite",
            {
                "tag": "litert",
                "module": "ai_edge_litert.interpreter",
                "models": models,
                "configs": LITERT_CONFIGS,
                **timing,
            },
            d,
        )
        if have_tflite_runtime:
            point["tflite_runtime"] = run_child(
                "tflite",
                {
                    "tag": "tflite-runtime",
                    "module": "tflite_runtime.interpreter",
                    "models": models,
                    "configs": TFLITE_RUNTIME_CONFIGS,
                    **timing,
                },
                d,
                python=str(args.tflite_python),
            )
        else:
            point["tflite_runtime"] = {"error": f"tflite-runtime venv {info['tflite_env']}"}
        point["memory"] = {}
        for variant, path in models.items():
            for xnnpack in (True, False):
                label = "XNNPACK" if xnnpack else "noXNN"
                res = run_child(
                    "memory",
                    {
                        "tag": f"memory-{variant}-{label}",
                        "module": "ai_edge_litert.interpreter",
                        "model": path,
                        "xnnpack": xnnpack,
                        "data": data,
                    },
                    d,
                )
                point["memory"].setdefault(variant, {})[label] = res.get("rss_kb", res)
        log(f"  timed {point['name']}", flush=True)
    time_s = time.monotonic() - t0

    total_s = time.monotonic() - begun
    phases = {"prep_s": prep_s, "convert_s": convert_s, "time_s": time_s, "total_s": total_s}
    command = " ".join(["bench/convert_bench.py", *(argv if argv is not None else sys.argv[1:])])
    raw = {
        "command": command,
        "machine": info,
        "phases": phases,
        "args": {k: str(v) for k, v in vars(args).items()},
        "points": [{k: v for k, v in pt.items() if k != "source"} for pt in points],
    }
    (workdir / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    text = render(info, points, phases, args, command)
    args.out.write_text(text)
    kept = f" (raw data: {workdir / 'results.json'})" if args.workdir else ""
    log(f"wrote {args.out} in {total_s / 60:.1f} min{kept}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


# --------------------------------------------------------------------------- report


def rows_for(point: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows: one per (variant, runtime) and one per reference."""
    rows = []
    ref = point.get("reference", {})
    prep = point["prep"]
    for variant in VARIANTS:
        conv = point["variants"].get(variant, {})
        for runtime, key in (("LiteRT", "litert"), ("tflite-runtime", "tflite_runtime")):
            res = point.get(key, {})
            per = res.get(variant) if isinstance(res, dict) and "error" not in res else None
            row = {
                "variant": variant,
                "runtime": runtime,
                "offered": variant in PROJECT_MODES,
                "bytes": conv.get("bundle_bytes"),
                "conv": conv,
                "configs": per or {},
                "runtime_error": res.get("error") if isinstance(res, dict) else None,
            }
            rows.append(row)
    for key, label, size in (
        ("keras_predict", "Keras model.predict", prep.get("keras_bytes")),
        ("tf_function", "tf.function(model)", prep.get("keras_bytes")),
        ("onnx", "ONNX Runtime (as exported: Loop)", None),
        ("onnx_unrolled", "ONNX Runtime (unrolled clone)", None),
    ):
        entry = ref.get(key)
        if key.startswith("onnx"):
            path = prep.get(key, {}).get("path")
            size = Path(path).stat().st_size if path and Path(path).exists() else None
            if entry is None and "error" in prep.get(key, {}):
                entry = {"error": prep[key]["error"]}
        if entry is None and "error" in ref:
            entry = {"error": ref["error"]}
        rows.append(
            {
                "variant": label,
                "runtime": "reference",
                "offered": False,
                "bytes": size,
                "conv": {},
                "configs": {"1T": entry} if entry else {},
            }
        )
    return rows


def best_within_budget(
    point: dict[str, Any], variants: tuple[str, ...], configs: tuple[str, ...]
) -> Optional[tuple[str, str, dict[str, Any]]]:
    """Fastest (variant, config, entry) under LiteRT within the error budget."""
    found = []
    lit = point.get("litert", {})
    for v in variants:
        for c in configs:
            e = lit.get(v, {}).get(c)
            if e and "error" not in e and e["rel_mae"] <= BUDGET:
                found.append((e["ms"], v, c, e))
    if not found:
        return None
    _, v, c, e = min(found, key=lambda f: f[0])
    return v, c, e


def ort_bar(point: dict[str, Any]) -> Optional[tuple[str, float]]:
    """The faster ONNX Runtime route: (label, ms)."""
    ref = point.get("reference", {})
    opts = [
        (k, ref[k]["ms"])
        for k in ("onnx", "onnx_unrolled")
        if isinstance(ref.get(k), dict) and "ms" in ref[k]
    ]
    return min(opts, key=lambda o: o[1]) if opts else None


def render(
    info: dict[str, Any],
    points: list[dict[str, Any]],
    phases: dict[str, float],
    args: argparse.Namespace,
    command: str,
) -> str:
    out: list[str] = []
    w = out.append
    w("# Converter benchmark results\n")
    w(
        f"Written by `.venv/bin/python {command}` on {info['date']}; the run took "
        f"{phases['total_s'] / 60:.1f} min (training + ONNX export {phases['prep_s']:.0f} s, "
        f"conversions {phases['convert_s']:.0f} s, timing {phases['time_s']:.0f} s).\n"
    )
    w("## Machine\n")
    w(f"- CPU: {info['cpu']} — {info['cores']} cores ({info['usable_cores']} usable)")
    w(f"- OS: {info['platform']}")
    w(f"- Python {info['python']} (`.venv`)")
    w("- Packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    w(f"- tflite-runtime venv: {info['tflite_env']}")
    w(f"- Date: {info['date']}")
    w(f"- sensorcast commit: {info.get('commit', 'unknown')}\n")

    w("## Method\n")
    w(
        f"- Models: `keras.Sequential([Input((window, 3)), LSTM(units), Dense(12)])`, "
        f"trained **1 epoch** (Adam 1e-3, MSE, batch 32, {N_TRAIN} windows, seeded) on a "
        "synthetic 3-feature series (daily and weekly sine cycles plus noise, period 1 "
        '"hour"), target the next 12 values of feature 0.'
    )
    w(
        f"- Calibration for int8: {N_CALIB} windows from a later part of the series; "
        f"errors: {N_EVAL} held-out windows from the end of it, against Keras `predict` of "
        "the saved model. **MAE/std** and **max/std** are the mean and max abs error divided "
        "by the std of the Keras outputs on those windows."
    )
    w(
        "- Variants `float32`, `float16`, `dynamic`, `int8` are what the converter offers, "
        "made by its own code (`convert.quantize.convert_in_child` on "
        "`convert.load.load_source`): float modes keep the LSTM's WHILE loop, int8 "
        "unrolls it (full integer, float I/O). The `*-unrolled` variants are experiments: "
        "the project's `convert._worker.unrolled_clone` (clone_model with unroll=True, "
        "fixed (1, W, 3) input, set_weights), `model.export(format='tf_saved_model')`, "
        "`TFLiteConverter.from_saved_model`, each in a child process. "
        "Sizes are bundle bytes: the .tflite with the sensorcast manifest embedded "
        "(`convert.bundle.embed_manifest`, ~1 KB)."
    )
    w(
        f"- Latency: mean ms per inference, batch 1, bare `set_tensor`/`invoke`/`get_tensor` "
        f"loop, after a warm-up; the median of {args.rounds} rounds of at least "
        f"{args.budget} s (and 10 calls) each. Every runtime runs in its own process, one at "
        "a time. `noXNN` = `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES` (the default "
        "XNNPACK delegate off). The agent runs bundles like the **LiteRT 1 thread** column "
        "(LiteRT, num_threads=1, XNNPACK on)."
    )
    w(
        "- References, one thread each (TF intra/inter-op threads = 1; ORT intra/inter = 1, "
        "sequential): Keras `model.predict(x, verbose=0)` on one window, a `tf.function` of "
        "`model(x, training=False)` with a fixed (1, W, 3) signature, and ONNX Runtime on "
        "the model exported with Keras 3's `model.export(format='onnx')` (tf2onnx underneath; "
        "the LSTM becomes an ONNX `Loop`) and on the unrolled clone exported the same way."
    )
    w(f"- Budget of question 4: MAE/std <= {BUDGET:.0%}.\n")

    # Summary
    w("## Summary: fastest offered mode vs ONNX Runtime\n")
    w(
        "Converter modes under LiteRT as the agent runs them (1 thread, XNNPACK on); "
        f'"within budget" = MAE/std <= {BUDGET:.0%}. ORT bar = the faster of the two '
        "ONNX Runtime routes.\n"
    )
    w(
        "| model | ORT Loop ms | ORT unrolled ms | fastest offered mode in budget | ms | "
        "bundle bytes | vs ORT bar | fastest of any variant/config in budget | ms | bytes |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|")
    answers = []
    for pt in points:
        ref = pt.get("reference", {})
        bar = ort_bar(pt)
        offered = best_within_budget(pt, PROJECT_MODES, ("1T",))
        anyv = best_within_budget(pt, VARIANTS, tuple(c[0] for c in LITERT_CONFIGS))
        verdict = "—"
        if offered and bar:
            ratio = bar[1] / offered[2]["ms"]
            verdict = (
                f"**{ratio:.2f}x faster**"
                if offered[2]["ms"] <= bar[1]
                else f"{1 / ratio:.2f}x slower"
            )
        answers.append((pt, bar, offered, anyv))
        cells = [
            pt["name"],
            fmt_ms(ref.get("onnx")),
            fmt_ms(ref.get("onnx_unrolled")),
            offered[0] if offered else "none",
            fmt_ms(offered[2]) if offered else "—",
            fmt_size(pt["variants"][offered[0]].get("bundle_bytes")) if offered else "—",
            verdict,
            f"{anyv[0]} {anyv[1]}" if anyv else "none",
            fmt_ms(anyv[2]) if anyv else "—",
            fmt_size(pt["variants"][anyv[0]].get("bundle_bytes")) if anyv else "—",
        ]
        w("| " + " | ".join(cells) + " |")
    w("")

    w("## Findings\n")
    for line in findings(points, answers):
        w(line)
    w("")
    out.extend(overview(points))

    # Per-point tables
    w("## Per model\n")
    w(
        "`1T` etc. are LiteRT/tflite-runtime configurations (see Method); reference rows "
        "have their one-thread latency in the first latency column. Error columns are for "
        "the row's runtime with its default configuration (1 thread, XNNPACK on); notes say "
        "when another configuration's error differs. ¹ = error, see notes.\n"
    )
    configs = [c[0] for c in LITERT_CONFIGS]
    for pt in points:
        prep = pt["prep"]
        w(f"### {pt['name']}\n")
        w(
            f"{prep['params']:,} parameters; train loss after 1 epoch {prep['train_loss']:.4f}; "
            f"std of Keras outputs {prep['output_std']:.4f}; .keras file "
            f"{prep['keras_bytes']:,} bytes.\n"
        )
        w(
            "| variant | runtime | bytes | MAE/std | max/std | "
            + " | ".join(CONFIG_TITLES[c] for c in configs)
            + " | convert s | notes |"
        )
        w("|---|---|---|---|---|" + "---|" * len(configs) + "---|---|")
        for row in rows_for(pt):
            conv, per = row["conv"], row["configs"]
            notes = []
            if conv.get("error") and row["runtime"] == "LiteRT":
                notes.append(f"conversion failed: {conv['error'][:200]}")
            if row["runtime"] == "LiteRT":
                notes.extend(conv.get("warnings", []))
            if row.get("runtime_error") and "error" not in conv:
                notes.append(row["runtime_error"][:200])
            first = per.get("1T") or {}
            errs = sorted({e["error"] for e in per.values() if e and "error" in e})
            notes.extend(f"¹ {e[:220]}" for e in errs)
            for c, e in per.items():
                if c != "1T" and e and "rel_mae" in e and "rel_mae" in first:
                    a, b = e["rel_mae"], first["rel_mae"]
                    if abs(a - b) > max(1e-4, 0.1 * max(a, b)):
                        notes.append(f"MAE/std {fmt_rel(a)} with {c}")
            if row["variant"] in PROJECT_MODES and "rel_mae" in first:
                from convert.verify import BOUNDS

                bm, bx = BOUNDS[row["variant"]]
                if first["rel_mae"] > bm or first["rel_max"] > bx:
                    notes.append(
                        f"beyond the converter's {row['variant']} sanity bound "
                        f"({bm:.2%} / {bx:.2%}; it judges by the targets' std)"
                    )
            label = row["variant"] + (" *(offered)*" if row["offered"] else "")
            runtime = {"LiteRT": "LiteRT", "tflite-runtime": "tflite-rt 2.14", "reference": "—"}[
                row["runtime"]
            ]
            cells = [
                label,
                runtime,
                fmt_size(row["bytes"]),
                fmt_rel(first.get("rel_mae")),
                fmt_rel(first.get("rel_max")),
            ]
            cells += [fmt_ms(per.get(c)) if c in per else "—" for c in configs]
            cs = conv.get("convert_s")
            cells.append(f"{cs:.0f}" if cs and row["runtime"] == "LiteRT" else "")
            cells.append("; ".join(dict.fromkeys(notes)))
            w("| " + " | ".join(cells) + " |")
        for key in ("onnx", "onnx_unrolled"):
            o = prep.get(key, {})
            if o.get("failed"):
                w(f"\nONNX export ({key}): tried and failed first: {'; '.join(o['failed'])}")
        w("")
    return "\n".join(out) + "\n"


SHORT = {
    "float32": "float32",
    "float16": "float16",
    "dynamic": "dynamic",
    "int8": "int8",
    "float32-unrolled": "f32 unrolled",
    "float16-unrolled": "f16 unrolled",
    "dynamic-unrolled": "dyn unrolled",
}


def overview(points: list[dict[str, Any]]) -> list[str]:
    """Cross-grid tables: LiteRT latency, MAE, bundle size and memory per variant."""
    out = []
    head = "| model | " + " | ".join(SHORT[v] for v in VARIANTS)
    sep = "|---|" + "---|" * len(VARIANTS)

    out.append("## Overview across the grid\n")
    out.append(
        "LiteRT, 1 thread, XNNPACK on (as the agent runs bundles), ms per inference; "
        "references at 1 thread. Offered modes are the first four columns.\n"
    )
    out.append(head + " | ORT Loop | ORT unrolled | tf.function | Keras predict |")
    out.append(sep + "---|---|---|---|")
    for pt in points:
        lit, ref = pt.get("litert", {}), pt.get("reference", {})
        cells = [fmt_ms(lit.get(v, {}).get("1T")) for v in VARIANTS]
        cells += [fmt_ms(ref.get(k)) for k in ("onnx", "onnx_unrolled", "tf_function")]
        cells.append(fmt_ms(ref.get("keras_predict")))
        out.append(f"| {pt['name']} | " + " | ".join(cells) + " |")
    out.append("")

    out.append("Same, with XNNPACK off (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`), ms:\n")
    out.append(head + " |")
    out.append(sep)
    for pt in points:
        lit = pt.get("litert", {})
        cells = [fmt_ms(lit.get(v, {}).get("1T-noXNN")) for v in VARIANTS]
        out.append(f"| {pt['name']} | " + " | ".join(cells) + " |")
    out.append("")

    out.append("MAE/std against Keras (LiteRT, 1 thread, XNNPACK on):\n")
    out.append(head + " |")
    out.append(sep)
    for pt in points:
        lit = pt.get("litert", {})
        cells = [fmt_rel(lit.get(v, {}).get("1T", {}).get("rel_mae")) for v in VARIANTS]
        out.append(f"| {pt['name']} | " + " | ".join(cells) + " |")
    out.append("")

    out.append(
        "Bundle bytes (.tflite + manifest); in brackets the .tflite's size if its tensor "
        "names were shortened to `t<i>` (computed, not timed); ONNX file bytes:\n"
    )
    out.append(head + " | ONNX Loop | ONNX unrolled |")
    out.append(sep + "---|---|")
    for pt in points:
        cells = []
        for v in VARIANTS:
            c = pt["variants"].get(v, {})
            b = fmt_size(c.get("bundle_bytes"))
            if c.get("short_names_bytes") and c["short_names_bytes"] < 0.9 * c["tflite_bytes"]:
                b += f" ({c['short_names_bytes']:,})"
            cells.append(b)
        for key in ("onnx", "onnx_unrolled"):
            path = pt["prep"].get(key, {}).get("path")
            ok = path and Path(path).exists()
            cells.append(fmt_size(Path(path).stat().st_size) if ok else "—")
        out.append(f"| {pt['name']} | " + " | ".join(cells) + " |")
    out.append("")

    out.append(
        "Memory: growth of the process's RSS from creating the LiteRT interpreter to after "
        "its first invoke, MB, XNNPACK on / off (one fresh process per cell):\n"
    )
    out.append(head + " |")
    out.append(sep)
    for pt in points:
        cells = []
        for v in VARIANTS:
            m = pt.get("memory", {}).get(v, {})
            on, off = m.get("XNNPACK"), m.get("noXNN")
            if isinstance(on, int) and isinstance(off, int):
                cells.append(f"{on / 1024:.1f} / {off / 1024:.1f}")
            else:
                cells.append("—")
        out.append(f"| {pt['name']} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def findings(points: list[dict[str, Any]], answers: list[Any]) -> list[str]:
    """Plain-words answers, computed from the numbers."""
    lines: list[str] = []

    def lit(pt: dict[str, Any], v: str, c: str = "1T") -> dict[str, Any]:
        e = pt.get("litert", {}).get(v, {}).get(c)
        return e if isinstance(e, dict) and "ms" in e else {}

    def span(r: list[float], unit: str = "x") -> str:
        if not r:
            return "n/a"
        return f"{min(r):.2f}{unit} to {max(r):.2f}{unit}"

    def ms(value: float) -> str:
        return fmt_ms({"ms": value})

    def mb(kb: Any) -> str:
        return f"{kb / 1024:.0f} MB" if isinstance(kb, int) else "?"

    # Question 4.
    yes = [a for a in answers if a[1] and a[2] and a[2][2]["ms"] <= a[1][1]]
    no = [a for a in answers if a not in yes]
    if not no:
        lines.append(
            f"- **Question 4: yes, on all {len(points)} grid points.** A mode the converter "
            "offers, run as the agent runs it (LiteRT, 1 thread, XNNPACK on), is at least as "
            f"fast as ONNX Runtime (the faster of its two routes, 1 thread) with MAE/std <= "
            f"{BUDGET:.0%}. Fastest offered mode within budget per point:"
        )
    else:
        lines.append(
            f"- **Question 4: no.** On {len(no)} of {len(points)} grid points no offered mode "
            f"(LiteRT, 1 thread, XNNPACK on) within MAE/std <= {BUDGET:.0%} is as fast as ONNX "
            f"Runtime; on {len(yes)} one is:"
        )
    for pt, bar, offered, _ in answers:
        if not (bar and offered):
            lines.append(f"  - {pt['name']}: not measurable (ORT {bar}, offered {offered})")
            continue
        e = offered[2]
        lines.append(
            f"  - {pt['name']}: {offered[0]} {fmt_ms(e)} ms (MAE/std {fmt_rel(e['rel_mae'])}) vs "
            f"ORT {ms(bar[1])} ms ({'Loop' if bar[0] == 'onnx' else 'unrolled'}): "
            f"{bar[1] / e['ms']:.1f}x ORT's speed"
        )
    for pt, bar, _, anyv in no:
        if anyv and bar and anyv[2]["ms"] <= bar[1]:
            v, c, e = anyv
            lines.append(
                f"  - What it would take on {pt['name']}: {v} with LiteRT {c} runs "
                f"{fmt_ms(e)} ms (MAE/std {fmt_rel(e['rel_mae'])}, "
                f"{fmt_size(pt['variants'][v].get('bundle_bytes'))} bytes) vs ORT "
                f"{ms(bar[1])} ms."
            )
        elif bar:
            lines.append(
                f"  - On {pt['name']} no variant or configuration measured here beats "
                f"ORT's {ms(bar[1])} ms within budget."
            )

    # The default float32 alone.
    f32_vs, slower = [], []
    for pt, bar, _, _ in answers:
        f = lit(pt, "float32")
        if bar and f:
            f32_vs.append((bar[1] / f["ms"], pt, f["ms"], bar[1]))
            if f["ms"] > bar[1]:
                slower.append(pt["name"])
    if f32_vs:
        worst = min(f32_vs, key=lambda t: t[0])
        text = (
            f"- The plain **float32** mode (the default, exact to ~1e-6 of the std; the LSTM as "
            f"a WHILE loop) alone runs at {span([t[0] for t in f32_vs])} ORT's speed; the "
            f"narrowest margin is {worst[1]['name']}: {ms(worst[2])} ms vs {ms(worst[3])} ms."
        )
        if slower:
            text += f" It is slower than ORT at: {', '.join(slower)}."
        else:
            text += " So the answer does not depend on quantization at all."
        lines.append(text)

    # Errors of the modes.
    def rel(v: str) -> list[tuple[float, str]]:
        return [(lit(pt, v)["rel_mae"], pt["name"]) for pt in points if lit(pt, v)]

    parts, missed = [], []
    for v in VARIANTS:
        r = rel(v)
        if r:
            over = [n for x, n in r if x > BUDGET]
            if over:
                missed.append(v)
            parts.append(
                f"{v} {fmt_rel(min(r)[0])} to {fmt_rel(max(r)[0])}"
                + (f" (**over the {BUDGET:.0%} budget** at {'; '.join(over)})" if over else "")
            )
    if parts:
        lines.append(
            "- **Error** (MAE/std vs Keras, LiteRT 1 thread): "
            + "; ".join(parts)
            + ". "
            + (
                f"Only {', '.join(missed)} ever misses the budget."
                if missed
                else "Every variant stays within the budget everywhere."
            )
        )

    # Unrolling.
    faster, slower_u = [], []
    for pt in points:
        a, b = lit(pt, "float32"), lit(pt, "float32-unrolled")
        if a and b:
            (faster if b["ms"] <= a["ms"] else slower_u).append((a["ms"] / b["ms"], pt))
    if faster or slower_u:
        text = (
            f"- **Unrolling** float32 (LiteRT, 1 thread, XNNPACK on) is faster than the WHILE "
            f"loop at {len(faster)} of {len(faster) + len(slower_u)} points "
            f"({span([t[0] for t in faster])} speed-up)"
        )
        if slower_u:
            text += ", slower at " + ", ".join(
                f"{pt['name']} ({1 / r:.2f}x slower)" for r, pt in slower_u
            )
        text += "."
        big = max(points, key=lambda pt: pt["window"] * pt["units"] ** 2)
        mem = big.get("memory", {})
        u_on, u_off = lit(big, "float32-unrolled"), lit(big, "float32-unrolled", "1T-noXNN")
        if u_on and u_off:
            packed = big["window"] * 4 * big["units"] ** 2 * 4 / 2**20
            text += (
                f" At {big['name']} XNNPACK hurts the unrolled model: {fmt_ms(u_on)} ms with "
                f"it, {fmt_ms(u_off)} ms without, and the interpreter grows by "
                f"{mb(mem.get('float32-unrolled', {}).get('XNNPACK'))} with XNNPACK vs "
                f"{mb(mem.get('float32-unrolled', {}).get('noXNN'))} without (the WHILE-loop "
                f"float32: {mb(mem.get('float32', {}).get('XNNPACK'))}). That fits XNNPACK "
                f"packing its own copy of the recurrent weights for each of the "
                f"{big['window']} unrolled steps ({big['window']} x 4 x {big['units']} x "
                f"{big['units']} floats = {packed:.0f} MB), which no longer fits in the CPU "
                "caches (an explanation that fits the numbers, not verified in XNNPACK's code)."
            )
        lines.append(text)

    dyn_best = [a for a in answers if a[3] and a[3][0] == "dynamic-unrolled"]
    if dyn_best:
        sizes = [
            (a[0]["variants"]["dynamic-unrolled"].get("bundle_bytes") or 0)
            / max(1, a[0]["variants"].get("dynamic", {}).get("bundle_bytes") or 1)
            for a in dyn_best
        ]
        lines.append(
            f"- The fastest variant within budget is the **dynamic-unrolled** experiment "
            f"at {len(dyn_best)} of {len(points)} points. There it is up to "
            f"{max(a[2][2]['ms'] / a[3][2]['ms'] for a in dyn_best if a[2]):.1f}x faster "
            f"than the best offered mode, but its bundle is {span(sizes)} the size of "
            "`dynamic`'s." + (" Every point is already won without it." if not no else "")
        )

    # XNNPACK and threads.
    def ratio(v: str, slow: str, fast: str) -> list[float]:
        return [
            lit(pt, v, slow)["ms"] / lit(pt, v, fast)["ms"]
            for pt in points
            if lit(pt, v, slow) and lit(pt, v, fast)
        ]

    offered_x = [r for v in PROJECT_MODES for r in ratio(v, "1T-noXNN", "1T")]
    lines.append(
        "- **XNNPACK** on vs off (LiteRT, 1 thread; speed-up = off ms / on ms): "
        + ", ".join(f"{v} {span(ratio(v, '1T-noXNN', '1T'))}" for v in VARIANTS)
        + (
            ". XNNPACK speeds up every offered mode at every point, so the agent's default "
            "(XNNPACK on) is right."
            if offered_x and min(offered_x) > 1
            else "."
        )
    )
    threads = [r for v in VARIANTS for r in ratio(v, "1T", "2T")]
    lines.append(
        "- **2 threads** vs 1 (LiteRT, XNNPACK on; speed-up = 1T ms / 2T ms): "
        + ", ".join(f"{v} {span(ratio(v, '1T', '2T'))}" for v in VARIANTS)
        + f". 2 threads are slower in {sum(r < 1 for r in threads)} of {len(threads)} cases "
        "and more than 10 % faster in "
        f"{sum(r > 1.1 for r in threads)}. A batch-1 LSTM step is too small to split "
        "across threads, so the agent's num_threads=1 is right."
    )

    # tflite-runtime.
    fails: dict[str, list[str]] = {}
    by_variant: dict[str, list[float]] = {}
    for pt in points:
        tr = pt.get("tflite_runtime", {})
        if not isinstance(tr, dict) or "error" in tr:
            continue
        for v in VARIANTS:
            e = tr.get(v, {}).get("1T")
            le = lit(pt, v)
            if e and "error" in e:
                fails.setdefault(e["error"], []).append(f"{pt['name']} {v}")
            elif e and "ms" in e and le:
                by_variant.setdefault(v, []).append(e["ms"] / le["ms"])
    text = "- **tflite-runtime 2.14** (1 thread, XNNPACK on), its ms / LiteRT's ms: " + ", ".join(
        f"{v} {span(r)}" for v, r in by_variant.items()
    )
    xnn8 = []
    for pt in points:
        tr = pt.get("tflite_runtime", {})
        a = tr.get("int8", {}).get("1T", {}) if isinstance(tr, dict) else {}
        b = tr.get("int8", {}).get("1T-noXNN", {}) if isinstance(tr, dict) else {}
        if "ms" in a and "ms" in b:
            xnn8.append(a["ms"] / b["ms"])
    if xnn8:
        text += (
            f". Its int8 runs as slowly with XNNPACK on as off ({span(xnn8)}), so its "
            "XNNPACK does not take these int8 operators and they run on TFLite's built-in "
            "kernels"
        )
    for err, where in fails.items():
        kinds = sorted({w.split(" ")[-1] for w in where})
        text += f". It cannot load {len(where)} bundles, every {' and '.join(kinds)} one: `{err}`"
    lines.append(text + ".")

    # Sizes.
    parts = []
    for pt in sorted(points, key=lambda pt: (pt["units"], pt["window"])):
        c = pt["variants"].get("int8", {})
        if c.get("tflite_bytes") and pt["units"] == max(p["units"] for p in points):
            parts.append(
                f"W={pt['window']}: {c['tflite_bytes']:,} bytes, {c['name_bytes']:,} of them "
                f"tensor names, {c['const_bytes']:,} constants"
            )
    if parts:
        big = max(points, key=lambda pt: (pt["window"], pt["units"]))
        c8 = big["variants"].get("int8", {})
        cf = big["variants"].get("float32", {})
        growth = c8.get("tflite_bytes", 0) / max(1, cf.get("tflite_bytes", 1))
        lines.append(
            "- **Bundle size.** The WHILE-loop modes do not grow with the window. The "
            "unrolled ones copy the cell's operators and tensors once per step; the weights "
            "are not copied. The offered int8 (unrolled) grows fastest, because of its "
            "tensor names: names "
            "such as `lstm/unstack;lstm/unstack1;...` list every step, so their bytes grow "
            "with the window squared. For the largest units: "
            + "; ".join(parts)
            + f". At {big['name']} int8 is {growth:.1f}x "
            f"the float32 file. With short tensor names it would be "
            f"{c8.get('short_names_bytes', 0):,} bytes."
        )

    # References.
    kp = [pt["reference"]["keras_predict"]["ms"] for pt in points
          if "ms" in pt.get("reference", {}).get("keras_predict", {})]  # fmt: skip
    tfn = [pt["reference"]["tf_function"]["ms"] for pt in points
           if "ms" in pt.get("reference", {}).get("tf_function", {})]  # fmt: skip
    if kp and tfn:
        lines.append(
            f"- References: Keras `predict` on one window costs {span(kp, ' ms')} (per-call "
            f"overhead, not compute) and a `tf.function` call {span(tfn, ' ms')}. Both are "
            "far slower than every TFLite variant and than ORT."
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
