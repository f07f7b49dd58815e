"""Find a TFLite interpreter: LiteRT, then tflite-runtime, then tensorflow.lite.

One function decides, so every part of sensorcast runs bundles the same way.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sensorcast.agent.errors import ModelError

__all__ = ["RUNTIMES", "Runtime", "load_runtime"]

# (name, module, attribute) in order of preference.
RUNTIMES = (
    ("litert", "ai_edge_litert.interpreter", "Interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter", "Interpreter"),
    # tensorflow.lite is a lazily loaded API module: reach it from the top package.
    ("tensorflow", "tensorflow", "lite.Interpreter"),
)


@dataclass(frozen=True)
class Runtime:
    """An importable interpreter class and where it came from."""

    name: str
    interpreter_class: Callable[..., Any]
    version: str

    def interpreter(self, model: bytes, num_threads: Optional[int] = 1) -> Any:
        """Build an interpreter for ``model`` with tensors allocated."""
        try:
            interp = self.interpreter_class(model_content=model, num_threads=num_threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"the {self.name} interpreter cannot load the model ({exc})") from exc
        return interp


def load_runtime(prefer: Optional[str] = None) -> Runtime:
    """Return the first interpreter that imports.

    ``prefer`` (or the ``SENSORCAST_RUNTIME`` environment variable) names one
    of ``litert``, ``tflite-runtime``, ``tensorflow`` to use only that one.
    """
    wanted = prefer or os.environ.get("SENSORCAST_RUNTIME") or None
    names = [r[0] for r in RUNTIMES]
    if wanted is not None and wanted not in names:
        raise ModelError(f"runtime {wanted!r} is unknown; choose one of {', '.join(names)}")
    problems = []
    for name, module_name, attr in RUNTIMES:
        if wanted is not None and name != wanted:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            problems.append(f"{name}: {exc}")
            continue
        version = _version(module_name.split(".")[0])
        target: Any = module
        for part in attr.split("."):
            target = getattr(target, part)
        return Runtime(name=name, interpreter_class=target, version=version)
    raise ModelError(
        "no TFLite interpreter could be imported ("
        + "; ".join(problems)
        + "); install one: pip install ai-edge-litert"
    )


def _version(top: str) -> str:
    dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(top, top)
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # metadata missing in odd installs; the version is informative only
        return "unknown"
