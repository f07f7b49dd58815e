"""The demo's room: the shipped bundle and the synthetic readings it forecasts.

The bundle is package data (``room.tflite`` next to this module), so ``sensorcast demo`` runs
from a wheel install too; in the checkout it is the file ``examples/demo/train.py`` writes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["BUNDLE", "DEMO_PERIOD_S", "room_series"]

#: The demo model's bundle. A plain file path (pip installs packages unzipped): the agent
#: started by the demo reads it by name.
BUNDLE = Path(__file__).parent / "room.tflite"
#: Seconds between readings of the demo room (the bundle's ``period_s``).
DEMO_PERIOD_S = 300.0


def room_series(n: int, start: float, period_s: float = DEMO_PERIOD_S, seed: int = 7) -> np.ndarray:
    """A deterministic synthetic room: ``(n, 3)`` rows of (ts, temperature °C, humidity %).

    ``start`` is the first row's Unix time in seconds, ``period_s`` the seconds between rows.
    A daily cycle, a slower weather drift and sensor noise; the same generator makes the demo
    model's training data (examples/demo/train.py).
    """
    rng = np.random.default_rng(seed)
    ts = start + period_s * np.arange(n)
    day = 2 * math.pi * ts / 86400.0
    noise = rng.normal(0, 0.04, n)
    weather = np.empty(n)
    level = 0.0
    for i in range(n):  # a slow mean-reverting drift: AR(1)
        level = 0.995 * level + noise[i]
        weather[i] = level
    temperature = 21.0 + 1.8 * np.sin(day - 2.0) + weather + rng.normal(0, 0.08, n)
    humidity = 48.0 - 6.0 * np.sin(day - 1.6) - 4.0 * weather + rng.normal(0, 0.5, n)
    return np.column_stack([ts, temperature, humidity])
