"""Forecast quality on the device: what the model said against what then happened.

Each published forecast is remembered until its last step has passed. When the window
closes a period, that period's resampled readings are the actual values for every pending
forecast that had a step there: the absolute residual per target goes into a rolling
buffer per step. The rolling MAE per step is compared with the error the bundle's manifest
promised (``accuracy.forecast_mae``, measured by the converter on held-out data); when it
stays above ``drift_factor`` times the promise for ``drift_after_s``, the stream is flagged
as drifting: the model needs retraining before its forecasts mislead anyone.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

__all__ = ["QualityTracker"]


class QualityTracker:
    """One stream's forecast-vs-actual bookkeeping; owned by the main loop."""

    def __init__(
        self,
        horizon: int,
        target_index: list[int],
        promised: tuple[tuple[float, ...], ...] = (),
        samples: int = 200,
        drift_factor: float = 2.0,
        drift_after_s: float = 3600.0,
        min_samples: int = 20,
    ) -> None:
        self.horizon = horizon
        self._targets = list(target_index)
        n_targets = len(target_index)
        self.promised = np.asarray(promised, dtype=np.float64) if promised else None
        # Plain lists, not numpy: each forecast touches a dozen scalars, and numpy's per-call
        # cost on tiny arrays is several times the work (this runs for every forecast).
        self._samples = samples
        self._ring = [[[math.nan] * n_targets for _ in range(horizon)] for _ in range(samples)]
        self._next = [0] * horizon  # per step: residuals written so far (ring row = n % samples)
        # The forecasts still waiting for actuals, in a ring of horizon + 1 (older ones have
        # no step left): the slot each was made at, and its values.
        self._made = [-(2**62)] * (horizon + 1)
        self._values: list[list[list[float]]] = [[] for _ in range(horizon + 1)]
        self._written = 0
        self.drift_factor = drift_factor
        self.drift_after_s = drift_after_s
        self.min_samples = min_samples
        self.residuals = 0  #: Residuals counted since start.
        self._above_since: Optional[float] = None
        self.drifting = False

    def forecast(self, slot: int, values: np.ndarray) -> None:
        """A forecast made when the window's newest closed period was ``slot``."""
        i = self._written % len(self._made)
        self._made[i] = slot
        self._values[i] = values.tolist()
        self._written += 1

    def actual(self, slot: int, row: np.ndarray) -> None:
        """The resampled readings of period ``slot`` (all features, reading units)."""
        values = row.tolist()
        truth = [values[t] for t in self._targets]
        if not all(map(math.isfinite, truth)):
            return
        horizon, ring, nxt, samples = self.horizon, self._ring, self._next, self._samples
        for i, made in enumerate(self._made):
            step = slot - 1 - made
            if 0 <= step < horizon:
                guess = self._values[i][step]
                ring[nxt[step] % samples][step] = [abs(a - b) for a, b in zip(truth, guess)]
                nxt[step] += 1
                self.residuals += 1

    def _counts(self) -> np.ndarray:
        counts: np.ndarray = np.minimum(np.asarray(self._next), self._samples)
        return counts

    def mae(self) -> np.ndarray:
        """Rolling MAE per step and target (NaN where nothing was seen yet)."""
        ring = np.asarray(self._ring, dtype=np.float64)
        counts = np.isfinite(ring).sum(axis=0)
        total = np.nansum(ring, axis=0)
        out: np.ndarray = np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
        return out

    def update_drift(self, now: float) -> Optional[str]:
        """Re-judge drift at ``now``; returns ``"start"`` or ``"end"`` when it changes."""
        ratio = self.ratio()
        above = ratio is not None and ratio > self.drift_factor
        if not above:
            self._above_since = None
            if self.drifting:
                self.drifting = False
                return "end"
            return None
        if self._above_since is None:
            self._above_since = now
        if not self.drifting and now - self._above_since >= self.drift_after_s:
            self.drifting = True
            return "start"
        return None

    def ratio(self) -> Optional[float]:
        """Rolling MAE over the promised one (steps with enough samples), or None."""
        if self.promised is None:
            return None
        seen = self._counts() >= self.min_samples
        if not seen.any():
            return None
        mae = self.mae()[seen]
        promised = self.promised[seen]
        if not (promised > 0).all():
            return None
        return float(np.mean(mae) / np.mean(promised))

    def report(self, stream: str, model: str, now: float) -> dict[str, Any]:
        """The quality message's body."""
        mae = self.mae()
        ratio = self.ratio()
        return {
            "stream": stream,
            "model": model,
            "time": now,
            "residuals": self.residuals,
            "samples_by_step": self._counts().tolist(),
            "mae_by_step": [[_num(v) for v in row] for row in mae],
            "promised_mae_by_step": self.promised.tolist() if self.promised is not None else None,
            "ratio": None if ratio is None else round(ratio, 4),
            "drift": self.drifting,
            "drift_factor": self.drift_factor,
        }


def _num(value: float) -> Optional[float]:
    return None if not np.isfinite(value) else round(float(value), 6)
