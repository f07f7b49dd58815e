"""Naive baselines: what a forecaster with no model would have said from the same window.

``last_value`` carries the window's newest row of each target over every step.
``seasonal`` repeats the last season: step ``i`` (from 0) is the value ``season`` periods
before the period it forecasts, ``window[-season + (i % season)]``; only when the bundle's
manifest measured a season (``accuracy.season``) that fits in the window.
A model whose error is not below theirs has no skill.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
from sensorcast.agent.forecast.manifest import Manifest

__all__ = ["LAST_VALUE", "SEASONAL", "Baselines"]

LAST_VALUE = "last_value"
SEASONAL = "seasonal"


class Baselines:
    """The baselines of one stream: their names, and their forecasts of a window."""

    def __init__(self, horizon: int, target_index: list[int], season: int = 0) -> None:
        self._targets = np.asarray(target_index, dtype=np.intp)
        # The target columns as a slice when they are consecutive (one target always is): a
        # view, cheaper than the index array's copy, per forecast.
        first = target_index[0] if target_index else 0
        run = list(range(first, first + len(target_index)))
        self._cols: Union[slice, np.ndarray] = (
            slice(first, first + len(run)) if list(target_index) == run else self._targets
        )
        self.season = season if season > 0 else 0
        self.names: tuple[str, ...] = (LAST_VALUE, SEASONAL) if self.season else (LAST_VALUE,)
        # The window row each step repeats (negative: counted from the newest).
        self._rows = -self.season + (np.arange(horizon) % self.season) if self.season else None

    @classmethod
    def for_manifest(cls, m: Manifest, horizon: int, target_index: list[int]) -> Baselines:
        """``last_value``, and ``seasonal`` when the manifest's season fits the window."""
        season = m.accuracy.season if m.accuracy is not None else 0
        return cls(horizon, target_index, season if 0 < season <= m.window else 0)

    def fill(self, window: np.ndarray, out: np.ndarray) -> None:
        """Every baseline's forecast of ``window`` ``(window, features)`` into ``out``
        ``(horizon, baselines, targets)``, target units."""
        out[:, 0, :] = window[-1, self._cols]
        if self._rows is not None:
            out[:, 1, :] = window[self._rows][:, self._cols]

    def forecast(self, name: str, window: np.ndarray, horizon: int) -> Optional[np.ndarray]:
        """Baseline ``name``'s ``(horizon, targets)`` forecast of ``window`` (a new array), or
        None when this stream has no such baseline."""
        if name not in self.names:
            return None
        out = np.empty((horizon, len(self.names), len(self._targets)))
        self.fill(window, out)
        values: np.ndarray = out[:, self.names.index(name), :]
        return np.ascontiguousarray(values)
