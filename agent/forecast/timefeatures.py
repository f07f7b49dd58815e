"""Calendar features a model can take as inputs, computed from time: no sensor provides them.

The TensorFlow time-series tutorial adds ``Day sin``, ``Day cos``, ``Year sin`` and
``Year cos`` computed from each row's timestamp; a bundle marks such inputs as computed
(manifest ``computed``: feature name -> kind) and the agent fills them for every slot of the
window from the slot's start. Definitions are the tutorial's: ``sin``/``cos(2*pi*t/P)``
with ``t`` in Unix seconds and ``P`` one day, one week or one mean Gregorian year.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TIME_KINDS", "TIME_PERIODS_S", "time_feature", "time_features"]

#: Period of each cycle, seconds.
TIME_PERIODS_S = {"day": 86400.0, "week": 604800.0, "year": 365.2425 * 86400.0}
#: Every computed kind: ``<cycle>_sin`` and ``<cycle>_cos``.
TIME_KINDS = tuple(f"{cycle}_{fn}" for cycle in TIME_PERIODS_S for fn in ("sin", "cos"))


def _parts(kind: str) -> tuple[float, bool]:
    cycle, _, fn = kind.partition("_")
    if kind not in TIME_KINDS:
        raise ValueError(f"time feature kind {kind!r} is not one of {', '.join(TIME_KINDS)}")
    return TIME_PERIODS_S[cycle], fn == "sin"


def time_feature(kind: str, t: float) -> float:
    """The value of ``kind`` at Unix time ``t`` (seconds)."""
    period, is_sin = _parts(kind)
    angle = 2.0 * math.pi * (t / period)
    return math.sin(angle) if is_sin else math.cos(angle)


def time_features(kind: str, t: np.ndarray) -> np.ndarray:
    """``kind`` at every Unix time in ``t`` (seconds), as float64."""
    period, is_sin = _parts(kind)
    angle = 2.0 * np.pi * (np.asarray(t, dtype=np.float64) / period)
    out: np.ndarray = np.sin(angle) if is_sin else np.cos(angle)
    return out
