"""Where things are: the checkout, the demo model, the tflite-runtime venv."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_DIR", "REPO", "TFLITE_PY"]

#: The checkout (bench/'s parent).
REPO = Path(__file__).resolve().parent.parent.parent
#: The demo's Keras model, normalization and bundle (``examples/demo``).
DEMO_DIR = REPO / "examples" / "demo"
#: tflite-runtime 2.14's venv (numpy < 2), made by ``scripts/setup-venv-tflite``.
TFLITE_PY = REPO / ".venv-tflite" / "bin" / "python"
