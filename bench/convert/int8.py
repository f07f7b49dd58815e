"""Question ``--int8`` (issue 15): what each int8 candidate costs and buys for recurrent models.

Two models, ``LSTM(64)`` and a stacked ``LSTM(64) -> LSTM(64)``, both ``window 48 x 3
features -> Dense(12)``, trained :data:`EPOCHS` epochs (seeded) on the benchmark's synthetic
series. Candidates: ``float32``, ``dynamic`` and ``int8`` (the LSTM as TFLite's fused
``UNIDIRECTIONAL_SEQUENCE_LSTM``) made by the converter's own ``convert_in_child``, and
``int8-unrolled`` (the converter's int8 before issue 15: ``unrolled_clone``, no fused op),
made by the ``unrolled`` child. Both int8 candidates calibrate as the converter does
(``convert/ranges.headroom_calibration``: the windows plus copies 1 std beyond them).

Children: ``int8prep`` (train, reference outputs) and ``int8run`` (errors and interleaved
timing of every candidate of one model in one process, LiteRT, 1 thread; on the host and in
the QEMU arm64 chroot). ``int8run`` imports only the standard library and numpy at the top.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from bench.convert.grid import (
    HORIZON,
    N_CALIB,
    N_FEATURES,
    N_TRAIN,
    SEED,
    last_line,
    synthetic_series,
    windows_from,
)
from bench.harness.children import Runner, Where
from bench.harness.timing import interleaved

__all__ = [
    "CANDIDATES",
    "MODELS",
    "SETS",
    "child_prep",
    "child_run",
    "measure",
]

WINDOW = 48
EPOCHS = 2
N_HELD = 200  #: held-out windows (each also shifted by +1 and +2 std: :data:`SETS`)
N_HELD_QEMU = 50  #: of them, measured again under emulation (each invoke is ~100x slower)
#: name -> (title, LSTM units per layer)
MODELS: dict[str, tuple[str, tuple[int, ...]]] = {
    "lstm64": ("LSTM(64) x 48 x 3", (64,)),
    "stacked": ("stacked LSTM(64) x 2 x 48 x 3", (64, 64)),
}
CANDIDATES = ("float32", "dynamic", "int8", "int8-unrolled")
#: window set -> shift of every feature, in stds of that feature over the training rows
SETS = {"held": 0.0, "shift1": 1.0, "shift2": 2.0}
QEMU_PYTHON = "/opt/sensorcast/litert/bin/python"
Log = Callable[[str], None]


def child_prep(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one model, save it, the calibration windows and Keras's outputs on every set."""
    import keras

    units, work = tuple(spec["units"]), Path(spec["dir"])
    keras.utils.set_random_seed(SEED + sum(units) + len(units))
    series = synthetic_series()
    n = len(series)
    x_train, y_train = windows_from(series, WINDOW, N_TRAIN, 0, int(0.7 * n))
    x_cal, _ = windows_from(series, WINDOW, N_CALIB, int(0.7 * n), int(0.85 * n))
    x_held, _ = windows_from(series, WINDOW, N_HELD, int(0.85 * n), n)
    recurrent = [
        keras.layers.LSTM(u, return_sequences=i < len(units) - 1) for i, u in enumerate(units)
    ]
    model = keras.Sequential(
        [keras.Input((WINDOW, N_FEATURES)), *recurrent, keras.layers.Dense(HORIZON)]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    hist = model.fit(x_train, y_train, epochs=EPOCHS, batch_size=32, shuffle=True, verbose=0)
    model.save(work / "model.keras")
    loaded = keras.models.load_model(work / "model.keras", compile=False)
    feature_std = series[: int(0.7 * n)].std(axis=0)
    arrays: dict[str, np.ndarray] = {"calib": x_cal}
    for name, shift in SETS.items():
        x = (x_held + shift * feature_std).astype(np.float32)
        arrays[name] = x
        arrays[f"{name}_keras"] = np.asarray(loaded.predict(x, batch_size=len(x), verbose=0))
    np.savez(work / "data.npz", allow_pickle=False, **arrays)
    return {
        "params": int(model.count_params()),
        "train_loss": float(hist.history["loss"][-1]),
        # The converter's bounds are in the targets' std; so are the errors here.
        "target_std": float(np.std(y_train)),
    }


def _invoker(interp: Any) -> Callable[[np.ndarray], np.ndarray]:
    """One forecast as the agent makes it: reset the state tensors, set, invoke, get."""
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def run(x: np.ndarray) -> np.ndarray:
        interp.reset_all_variables()  # the fused op keeps its state between invokes
        interp.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        interp.invoke()
        got: np.ndarray = interp.get_tensor(out["index"])[0].astype(np.float64)
        return got

    return run


def _errors(run: Callable[[np.ndarray], np.ndarray], data: Any, n: int, std: float) -> Any:
    """MAE and max abs error vs Keras on each set's first ``n`` windows, in % of ``std``."""
    result = {}
    for name in SETS:
        got = np.stack([run(x) for x in data[name][:n]])
        err = np.abs(got - data[f"{name}_keras"][:n])
        result[name] = {"mae": 100 * float(err.mean()) / std, "max": 100 * float(err.max()) / std}
    return result


def _calls_per_round(fn: Callable[[], Any], budget_s: float) -> int:
    """How many calls of ``fn`` fill ``budget_s`` (after a short warm-up)."""
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    each = (time.perf_counter() - t0) / 3
    return max(3, int(budget_s / max(each, 1e-9)))


def child_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Errors and interleaved latency of one model's candidates (LiteRT, 1 thread, XNNPACK on).

    The candidates take turns within each round, so a shared machine's drifting load hits
    them alike; ``ratio`` is the median over the rounds of the candidate's time over
    float32's in the same round.
    """
    import platform

    from ai_edge_litert.interpreter import Interpreter

    data = np.load(spec["data"])
    found: dict[str, Any] = {}
    stages: dict[str, Any] = {}
    x0 = data["held"][0]
    for name, path in spec["bundles"].items():
        try:
            interp = Interpreter(model_path=path, num_threads=1)
            interp.allocate_tensors()
        except Exception as exc:
            found[name] = {"error": last_line(exc)}
            continue
        run = _invoker(interp)
        found[name] = {"errors": _errors(run, data, spec["windows"], spec["target_std"])}
        call = (lambda r: lambda: r(x0))(run)
        stages[name] = (call, _calls_per_round(call, spec["budget"]), None)
    timed = interleaved(stages, spec["rounds"]) if stages else {}
    base = timed.get("float32", {}).get("rounds")
    for name, t in timed.items():
        found[name].update(ms=t["us"] / 1000, min_ms=t["min"] / 1000, max_ms=t["max"] / 1000)
        if base:
            found[name]["ratio"] = statistics.median(a / b for a, b in zip(t["rounds"], base))
    return {"machine": platform.machine(), "bundles": found}


def _convert(runner: Runner, work: Path, candidate: str, calib: np.ndarray) -> dict[str, Any]:
    """One candidate's bare .tflite in ``work``: its path and conversion time, or the error."""
    from sensorcast.convert import ConvertError
    from sensorcast.convert.load import load_source
    from sensorcast.convert.quantize import convert_in_child

    started, out = time.monotonic(), work / f"{candidate}.tflite"
    if candidate == "int8-unrolled":
        np.save(work / "calib-headroom.npy", calib)
        spec = {
            "model": str(work / "model.keras"),
            "window": WINDOW,
            "variant": candidate,
            "calibration": str(work / "calib-headroom.npy"),
            "workdir": str(work / "conv-unrolled"),
            "output": str(out),
        }
        (work / "conv-unrolled").mkdir(exist_ok=True)
        res = runner.result("unrolled", spec, tag=f"{work.name}-{candidate}", work=work)
        if "error" in res:
            return {"error": res["error"]}
    else:
        try:
            source = load_source(work / "model.keras")
            out.write_bytes(
                convert_in_child(source, candidate, calib if "int8" in candidate else None)
            )
        except ConvertError as exc:
            return {"error": str(exc)[:300]}
    return {"path": str(out), "convert_s": time.monotonic() - started}


def _headroom(calib: np.ndarray) -> tuple[np.ndarray, str]:
    """The converter's int8 representative windows for ``calib``, and how they were made."""
    from sensorcast.agent.forecast.manifest import Manifest

    try:
        from sensorcast.convert.ranges import headroom_calibration
    except ImportError as exc:  # another helper's module in flux: measure without, say so
        return calib, f"the {len(calib)} windows only (headroom not importable: {exc})"
    manifest = Manifest(
        window=WINDOW,
        features=("f0", "f1", "f2"),
        targets=("f0",),
        horizon=HORIZON,
        period_s=3600.0,
        quantization="int8",
        source_sha256="0" * 64,
        source_name="model.keras",
        versions={},
        created="2026-01-01T00:00:00Z",
    )
    out = headroom_calibration(calib, manifest)
    return out, f"{len(calib)} windows plus {len(out) - len(calib)} copies 1 std beyond them"


def _describe(path: Path, point: dict[str, Any], name: str) -> dict[str, Any]:
    """Sizes (bare and as a bundle with a manifest) and the recurrence of one .tflite."""
    from sensorcast.convert.ops import inspect_ops

    from bench.convert.conversions import bundle_bytes

    tflite = path.read_bytes()
    bundle = bundle_bytes(tflite, point, name)[0]
    ops = inspect_ops(tflite, recurrent=True)
    return {
        "tflite_bytes": len(tflite),
        "bundle_bytes": len(bundle),
        "recurrence": ops.recurrence,
        "fused_ops": ops.histogram.get("UNIDIRECTIONAL_SEQUENCE_LSTM", 0),
        "ops": sum(ops.histogram.values()),
    }


def _prepare_model(runner: Runner, work: Path, key: str, jobs: int, log: Log) -> dict[str, Any]:
    """Train ``key``'s model and convert every candidate (``jobs`` at a time)."""
    import keras
    import tensorflow as tf

    work.mkdir(parents=True, exist_ok=True)
    units = MODELS[key][1]
    prep = runner.result("int8prep", {"dir": str(work), "units": list(units)}, tag=key, work=work)
    if "error" in prep:
        return {"error": f"training failed: {prep['error']}"}
    log(f"  trained {key} ({prep['seconds']:.0f} s)")
    calib, how = _headroom(np.load(work / "data.npz")["calib"])
    with ThreadPoolExecutor(jobs) as pool:
        done = dict(
            zip(CANDIDATES, pool.map(lambda c: _convert(runner, work, c, calib), CANDIDATES))
        )
    point = {
        "window": WINDOW,
        "dir": str(work),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    for name, res in done.items():
        if "path" in res:
            res.update(_describe(Path(res["path"]), point, name))
        log(f"  {key} {name}: {res.get('error') or str(res['bundle_bytes']) + ' bytes'}")
    return {"prep": prep, "calibration": how, "candidates": done}


def _run_spec(model: dict[str, Any], data: str, paths: dict[str, str], emulated: bool) -> Any:
    return {
        "data": data,
        "bundles": paths,
        "target_std": model["prep"]["target_std"],
        "windows": N_HELD_QEMU if emulated else N_HELD,
        "budget": 1.0 if emulated else 0.3,
        "rounds": 5 if emulated else 7,
    }


def _time_x86(runner: Runner, work: Path, key: str, model: dict[str, Any]) -> dict[str, Any]:
    paths = {c: r["path"] for c, r in model["candidates"].items() if "path" in r}
    spec = {**_run_spec(model, str(work / "data.npz"), paths, False), "label": f"{key} x86"}
    return runner.result("int8run", spec, tag=f"{key}-run-x86", work=work)


def _time_qemu(runner: Runner, work: Path, key: str, model: dict[str, Any], where: Where) -> Any:
    """The same child in the arm64 chroot: the bundles and data copied into its /work."""
    import shutil

    qdir = where.host / key
    qdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "data.npz", qdir / "data.npz")
    paths = {}
    for c, r in model["candidates"].items():
        if "path" in r:
            shutil.copy(r["path"], qdir / f"{c}.tflite")
            paths[c] = f"{where.inner}/{key}/{c}.tflite"
    spec = _run_spec(model, f"{where.inner}/{key}/data.npz", paths, True)
    spec["label"] = f"{key} qemu arm64"
    return runner.result(
        "int8run", spec, python=QEMU_PYTHON, where=where, tag=f"{key}-run-qemu", timeout_s=3600
    )


def qemu_where(work: Path, repo: Path, script: str) -> tuple[Optional[Where], str]:
    """The arm64 chroot (``deploy/qemu``, LiteRT venv, checkout at /src), or why not."""
    import subprocess

    try:
        layer = subprocess.run(
            [str(repo / "deploy" / "qemu" / "env")],
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        ).stdout.splitlines()[-1]
    except (subprocess.SubprocessError, OSError, IndexError) as exc:
        return None, f"cannot set up the arm64 chroot: {last_line(exc)}"
    qwork = work / "qemu"
    qwork.mkdir(parents=True, exist_ok=True)
    prefix = (
        *(str(repo / "deploy" / "qemu" / "run"), "--layer", layer),
        *("--bind", f"{repo}:/src:ro", "--bind", f"{qwork}:/work", "--"),
    )
    return Where(prefix, qwork, "/work", f"/src/{script}"), layer


def measure(runner: Runner, work: Path, qemu: bool, jobs: int, log: Log) -> dict[str, Any]:
    """Train, convert, then time every model on x86 and (``qemu``) on emulated arm64."""
    from bench.harness.paths import REPO
    from bench.harness.proc import load_avg

    result: dict[str, Any] = {"load": {"start": load_avg()}, "models": {}}
    log("int8 1/3: training and converting ...")
    for key in MODELS:
        result["models"][key] = _prepare_model(runner, work / key, key, jobs, log)
    ready = {k: m for k, m in result["models"].items() if "error" not in m}
    log("int8 2/3: x86 (LiteRT, 1 thread, one process at a time) ...")
    result["load"]["x86"] = load_avg()
    for key, model in ready.items():
        model["x86"] = _time_x86(runner, work / key, key, model)
    where, qemu_note = (None, "not run (--qemu off)")
    if qemu:
        log("int8 3/3: arm64 under QEMU ...")
        where, qemu_note = qemu_where(work, REPO, "bench/convert_bench.py")
    result["qemu_note"] = qemu_note
    result["load"]["qemu"] = load_avg()
    for key, model in ready.items():
        if where is not None:
            model["qemu"] = _time_qemu(runner, work / key, key, model, where)
    result["load"]["end"] = load_avg()
    return result
