"""Bundles and readings made from the demo model and its data."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.support.paths import DEMO_DIR

__all__ = ["convert_demo", "json_lines"]


def convert_demo(out: Path, *extra: str, calibrate: bool = True) -> int:
    """Run the real converter on the demo's Keras model (its norm and features) into ``out``,
    with ``extra`` arguments (``--period 0.2``...); returns its exit code."""
    from sensorcast.convert.cli import main as convert_main  # TensorFlow: only when asked

    args = [str(DEMO_DIR / "room.keras"), "-o", str(out), "--quiet", "--norm",
            str(DEMO_DIR / "norm.json"), "--features", "temperature,humidity"]  # fmt: skip
    if calibrate:
        args += ["--calibration", str(DEMO_DIR / "room.csv")]
    return convert_main([*args, *extra])


def json_lines(rows: Iterable[Sequence[float]], start: float, period: float) -> list[str]:
    """Readings ``(temperature, humidity)`` as JSON lines, one per ``period`` seconds from the
    Unix time ``start``."""
    return [
        json.dumps({"ts": start + i * period, "temperature": t, "humidity": h}) + "\n"
        for i, (t, h) in enumerate(rows)
    ]
