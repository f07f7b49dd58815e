"""Run a conversion in a child process and turn its failure into a clear message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

import numpy as np
from sensorcast.convert import ConvertError
from sensorcast.convert._worker import ERROR_PREFIX, PROGRESS_PREFIX
from sensorcast.convert.load import SourceModel

__all__ = ["MODES", "convert_in_child"]

MODES = ("float32", "float16", "dynamic", "int8")
CONVERT_TIMEOUT_S = 900


def convert_in_child(
    source: SourceModel,
    mode: str,
    calibration: Optional[np.ndarray] = None,
    int8_io: bool = False,
    progress: bool = False,
    batch: int = 1,
) -> bytes:
    """Convert ``source`` to TFLite in ``mode`` in a fresh Python process.

    ``calibration`` holds model-input windows (already normalized), needed for
    int8. With ``progress``, calibration shows a progress bar on stderr.
    """
    if mode not in MODES:
        raise ConvertError(f"quantization mode {mode!r} is unknown; choose {', '.join(MODES)}")
    if batch > 1 and (mode == "int8" or source.kind != "keras"):
        raise ConvertError(
            "--batch works with float32, float16 and dynamic modes of Keras models "
            "in this version; int8 and SavedModel bundles have one window per call"
        )
    if mode == "int8" and calibration is None:
        raise ConvertError(
            "int8 needs calibration data: pass --calibration DATA.csv with the model's features"
        )
    with tempfile.TemporaryDirectory(prefix="sensorcast-convert-") as tmp:
        work = Path(tmp)
        spec = {
            "model": str(source.path.resolve()),
            "kind": source.kind,
            "mode": mode,
            "window": source.shape.window,
            "n_features": source.shape.n_features,
            "workdir": str(work),
            "output": str(work / "model.tflite"),
            "int8_io": int8_io,
            "batch": batch,
        }
        if calibration is not None:
            np.save(work / "calibration.npy", calibration.astype(np.float32))
            spec["calibration"] = str(work / "calibration.npy")
        (work / "spec.json").write_text(json.dumps(spec))
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
        returncode, stderr = _run_worker(work, env, mode, progress and mode == "int8")
        if returncode < 0:
            name = signal.Signals(-returncode).name
            raise ConvertError(
                f"the TensorFlow converter crashed ({name}) converting to {mode}; "
                "this mode is unavailable for this model, try another --quantize mode"
            )
        if returncode != 0:
            ours = [ln for ln in stderr.splitlines() if ln.startswith(ERROR_PREFIX)]
            detail = ours[-1][len(ERROR_PREFIX) :] if ours else _last_line(stderr)
            if "tensor list ops" in stderr and source.kind == "savedmodel":
                raise ConvertError(
                    f"TensorFlow could not convert the SavedModel to {mode}: its recurrent layer "
                    "has a free batch dimension, which TFLite cannot lower; convert the .keras "
                    "file instead, or export with a fixed batch: model.export(DIR, "
                    f"input_signature=[tf.TensorSpec((1, {source.shape.window}, "
                    f"{source.shape.n_features}))])"
                )
            layer = source.layer_named_in(stderr)
            at = f" at layer {layer[0]!r} ({layer[1]})" if layer else ""
            raise ConvertError(
                f"TensorFlow could not convert the model to {mode}{at}: {detail[:400]}; "
                "try another --quantize mode, or replace that layer with LSTM, GRU, "
                "SimpleRNN, Conv1D or Dense"
            )
        return (work / "model.tflite").read_bytes()


def _run_worker(work: Path, env: dict[str, str], mode: str, progress: bool) -> tuple[int, str]:
    """Run the worker; relay its progress lines to a bar. Returns (exit code, stderr)."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            desc=f"calibrating {mode}", unit="window", file=sys.stderr, leave=False, disable=None
        )
    timed_out = threading.Event()
    with (work / "stderr.txt").open("w+") as err:
        with subprocess.Popen(
            [sys.executable, "-m", "sensorcast.convert._worker", str(work / "spec.json")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            text=True,
        ) as proc:
            assert proc.stdout is not None

            def expire() -> None:
                timed_out.set()
                proc.kill()

            # A timer, not a check between output lines: float conversions print nothing.
            timer = threading.Timer(CONVERT_TIMEOUT_S, expire)
            timer.start()
            try:
                for line in proc.stdout:
                    if bar is not None and line.startswith(PROGRESS_PREFIX):
                        done, total = (int(v) for v in line[len(PROGRESS_PREFIX) :].split())
                        bar.total = total
                        bar.n = done
                        bar.refresh()
                proc.wait()
            finally:
                timer.cancel()
                if bar is not None:
                    bar.close()
        if timed_out.is_set():
            raise ConvertError(
                f"conversion to {mode} took longer than {CONVERT_TIMEOUT_S:g} s and was stopped"
            )
        err.seek(0)
        return proc.returncode, err.read()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"
