"""Forecast quality on the device: what the model said against what then happened.

Each published forecast is remembered until its last step has passed. When the window
closes a period, that period's resampled readings are the actual values for every pending
forecast that had a step there: the absolute residual per target goes into a rolling
buffer per step. The rolling MAE per step is compared with the error the bundle's manifest
promised (``accuracy.forecast_mae``, measured by the converter on held-out data); when it
stays above ``drift_factor`` times the promise for ``drift_after_s``, the stream is flagged
as drifting: the model needs retraining before its forecasts mislead anyone.

The report also counts the forecasts made with this model, and how many of them came from
a window outside the range the bundle was verified on (``forecasts_out_of_range``): its
error there is what the converter could not promise.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["QualityTracker"]


class QualityTracker:
    """One stream's forecast-vs-actual bookkeeping; owned by the main loop.

    Forecasts and actuals are only copied into preallocated arrays as they come (under
    a microsecond each); residuals are worked out for many at once, in numpy, when a
    buffer fills or a figure is asked for.
    """

    def __init__(
        self,
        horizon: int,
        target_index: list[int],
        promised: tuple[tuple[float, ...], ...] = (),
        samples: int = 200,
        drift_factor: float = 2.0,
        drift_after_s: float = 3600.0,
        min_samples: int = 20,
        buffer: int = 256,
    ) -> None:
        self.horizon = horizon
        self._targets = np.asarray(target_index, dtype=np.intp)
        n_targets = len(target_index)
        self.promised = np.asarray(promised, dtype=np.float64) if promised else None
        self._samples = samples
        # Rolling residuals per step: ring row n % samples holds the n-th residual of a step.
        self._ring = np.full((samples, horizon, n_targets), np.nan)
        self._next = np.zeros(horizon, dtype=np.int64)  # per step: residuals written so far
        # Forecasts whose steps have not all been scored: the slot each was made at, its
        # values, and how many of its steps are scored.
        self._cap = max(buffer, horizon + 2)
        self._made = np.zeros(self._cap, dtype=np.int64)
        self._values = np.zeros((self._cap, horizon, n_targets))
        self._scored = np.zeros(self._cap, dtype=np.int64)
        self._n = 0
        # Actuals (whole rows, reading units) by slot, in the order the window closed them.
        self._row_slots = np.zeros(self._cap + horizon + 1, dtype=np.int64)
        self._rows: Optional[np.ndarray] = None  # (capacity, features), made on first use
        self._m = 0
        self._steps = np.arange(horizon, dtype=np.int64)
        self.drift_factor = drift_factor
        self.drift_after_s = drift_after_s
        self.min_samples = min_samples
        self._residuals = 0
        self._above_since: Optional[float] = None
        self.drifting = False
        self.forecasts = 0  #: Forecasts made since this tracker (this model) started.
        #: Of those, made from a window outside the bundle's verified range.
        self.forecasts_out_of_range = 0

    @property
    def residuals(self) -> int:
        """Residuals counted since start (one per forecast and step)."""
        self._score()
        return self._residuals

    def forecast(self, slot: int, values: np.ndarray, out_of_range: bool = False) -> None:
        """A forecast made when the window's newest closed period was ``slot``;
        ``out_of_range``: from a window outside the bundle's verified range."""
        self.forecasts += 1
        self.forecasts_out_of_range += out_of_range
        if self._n == self._cap:
            self._score()
            if self._n == self._cap:  # no actuals came: the oldest forecasts can never score
                self._drop_forecasts(self._n - self.horizon - 1)
        n = self._n
        self._made[n] = slot
        self._values[n] = values
        self._scored[n] = 0
        self._n = n + 1

    def actual(self, slot: int, row: np.ndarray) -> None:
        """The resampled readings of period ``slot`` (all features, reading units)."""
        rows = self._rows
        if rows is None:
            rows = self._rows = np.empty((len(self._row_slots), row.shape[0]))
        if self._m == len(self._row_slots):
            self._score()
        m = self._m
        self._row_slots[m] = slot
        rows[m] = row
        self._m = m + 1

    def _score(self) -> None:
        """Residuals for every forecast step whose actual has come, into the rolling ring."""
        n, m = self._n, self._m
        if n == 0 or m == 0 or self._rows is None:
            self._m = 0 if n == 0 else m
            return
        slots = self._row_slots[:m]
        truth = self._rows[:m][:, self._targets]
        usable = np.isfinite(truth).all(axis=1)
        latest = int(slots.max())
        want = self._made[:n, None] + 1 + self._steps  # (n, horizon): the slot of each step
        pending = (self._steps >= self._scored[:n, None]) & (want <= latest)
        if pending.any():
            order = np.argsort(slots, kind="stable")
            pos = np.searchsorted(slots[order], want)
            pos = np.minimum(pos, m - 1)
            idx = order[pos]
            hit = pending & (slots[idx] == want) & usable[idx]
            residual = np.abs(truth[idx] - self._values[:n])  # (n, horizon, targets)
            ring, nxt, samples = self._ring, self._next, self._samples
            for step in np.flatnonzero(hit.any(axis=0)):
                got = residual[hit[:, step], step]  # in the order the forecasts were made
                k = len(got)
                if k > samples:
                    got, skipped = got[-samples:], k - samples
                else:
                    skipped = 0
                rows = (nxt[step] + skipped + np.arange(len(got))) % samples
                ring[rows, step] = got
                nxt[step] += k
                self._residuals += k
            # Steps up to the latest actual are settled (a step with no usable actual is lost).
            now_scored = np.clip(latest - self._made[:n], 0, self.horizon)
            np.maximum(self._scored[:n], now_scored, out=self._scored[:n])
        # Keep the forecasts with steps still to come, and the actuals they may need.
        keep = self._made[:n] + self.horizon > latest
        self._compact_forecasts(keep)
        if self._n:
            oldest = int(self._made[: self._n].min())
            needed = slots > oldest
        else:
            needed = slots > latest  # nothing pending: no actual is needed again
        k = int(np.count_nonzero(needed))
        self._row_slots[:k] = slots[needed]
        self._rows[:k] = self._rows[:m][needed]
        self._m = k

    def _compact_forecasts(self, keep: np.ndarray) -> None:
        n = self._n
        k = int(np.count_nonzero(keep))
        if k == n:
            return
        self._made[:k] = self._made[:n][keep]
        self._values[:k] = self._values[:n][keep]
        self._scored[:k] = self._scored[:n][keep]
        self._n = k

    def _drop_forecasts(self, count: int) -> None:
        keep = np.ones(self._n, dtype=bool)
        keep[: max(count, 0)] = False
        self._compact_forecasts(keep)

    def _counts(self) -> np.ndarray:
        self._score()
        counts: np.ndarray = np.minimum(self._next, self._samples)
        return counts

    def mae(self) -> np.ndarray:
        """Rolling MAE per step and target (NaN where nothing was seen yet)."""
        self._score()
        ring = self._ring
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
            "forecasts": self.forecasts,
            "forecasts_out_of_range": self.forecasts_out_of_range,
            "samples_by_step": self._counts().tolist(),
            "mae_by_step": [[_num(v) for v in row] for row in mae],
            "promised_mae_by_step": self.promised.tolist() if self.promised is not None else None,
            "ratio": None if ratio is None else round(ratio, 4),
            "drift": self.drifting,
            "drift_factor": self.drift_factor,
        }


def _num(value: float) -> Optional[float]:
    return None if not np.isfinite(value) else round(float(value), 6)
