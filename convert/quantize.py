"""Run a conversion in a child process and turn its failure into a clear message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from convert import ConvertError
from convert._worker import ERROR_PREFIX

__all__ = ["MODES", "convert_in_child"]

MODES = ("float32", "float16", "dynamic", "int8")
CONVERT_TIMEOUT_S = 900


def convert_in_child(
    model_path: Path,
    mode: str,
    window: int,
    n_features: int,
    calibration: Optional[np.ndarray] = None,
    int8_io: bool = False,
) -> bytes:
    """Convert ``model_path`` to TFLite in ``mode`` in a fresh Python process.

    ``calibration`` holds model-input windows (already normalized), needed for int8.
    """
    if mode not in MODES:
        raise ConvertError(f"quantization mode {mode!r} is unknown; choose {', '.join(MODES)}")
    if mode == "int8" and calibration is None:
        raise ConvertError(
            "int8 needs calibration data: pass --calibration DATA.csv with the model's features"
        )
    with tempfile.TemporaryDirectory(prefix="sensorcast-convert-") as tmp:
        work = Path(tmp)
        spec = {
            "model": str(model_path.resolve()),
            "mode": mode,
            "window": window,
            "n_features": n_features,
            "workdir": str(work),
            "output": str(work / "model.tflite"),
            "int8_io": int8_io,
        }
        if calibration is not None:
            np.save(work / "calibration.npy", calibration.astype(np.float32))
            spec["calibration"] = str(work / "calibration.npy")
        (work / "spec.json").write_text(json.dumps(spec))
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "convert._worker", str(work / "spec.json")],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=env,
                timeout=CONVERT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ConvertError(
                f"conversion to {mode} took longer than {CONVERT_TIMEOUT_S} s and was stopped"
            ) from exc
        stderr = proc.stderr.decode("utf-8", errors="replace")
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            raise ConvertError(
                f"the TensorFlow converter crashed ({name}) converting to {mode}; "
                "this mode is unavailable for this model, try another --quantize mode"
            )
        if proc.returncode != 0:
            ours = [ln for ln in stderr.splitlines() if ln.startswith(ERROR_PREFIX)]
            detail = ours[-1][len(ERROR_PREFIX) :] if ours else _last_line(stderr)
            raise ConvertError(f"TensorFlow could not convert the model to {mode}: {detail}")
        return (work / "model.tflite").read_bytes()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"
