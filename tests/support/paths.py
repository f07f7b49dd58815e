"""Where the tests find the checkout and its data."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DATA_DIR", "DEMO_DIR", "REPO"]

#: The checkout (tests run against the installed package, but read its files).
REPO = Path(__file__).resolve().parents[2]
#: The demo model's sources: room.keras, norm.json, room.csv, golden.npz, room.tflite.
DEMO_DIR = REPO / "examples" / "demo"
#: Files made for the tests: room_float32.tflite (the demo model, float32, another bundle).
DATA_DIR = REPO / "tests" / "data"
