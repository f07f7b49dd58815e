"""The rolling buffer behind a stream's forecast quality, and the figures drawn from it.

Per forecast step, the last ``samples`` scored forecasts, each as channels per target:
the signed residual (actual - forecast), where the actual fell against the band published
with the forecast (-1 below, 0 inside, +1 above, NaN: no band was published), and each naive
baseline's absolute error. Ring column ``j % samples`` of a step holds its ``j``-th score
(the ring is ``(channels, steps, targets, samples)``: every figure is a reduction along the
last, contiguous axis).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from sensorcast.agent.telemetry.intervals import ConformalBand

__all__ = ["Scores"]


class Scores:
    """Rolling scores of one stream's forecasts (main loop only); the figures (``mae``,
    ``coverage``, ``base_mae``, ``skill_by_step``, each per step) are recomputed by
    :meth:`refresh` when :attr:`dirty`, the band by :meth:`refresh_band`."""

    def __init__(
        self, samples: int, horizon: int, baselines: int, targets: int, min_samples: int
    ) -> None:
        self.samples = samples
        self.min_samples = min_samples
        self.ring = np.full((2 + baselines, horizon, targets, samples), np.nan)
        self.next = np.zeros(horizon, dtype=np.int64)  # per step: scores written so far
        self.total = 0  #: Residuals counted since start (one per forecast and step).
        self.dirty = False  #: Scores came since the figures were computed.
        self.band_dirty = False  #: Scores came since the band was refreshed.
        self.counts = np.zeros((horizon, targets), dtype=np.int64)  #: Residuals kept.
        self.mae = np.full((horizon, targets), np.nan)  #: Rolling MAE, target units.
        self.coverage = np.full((horizon, targets), np.nan)  #: Share inside the band.
        self.base_mae = np.full((horizon, baselines, targets), np.nan)  #: Baselines' MAE.
        self.skill_by_step = np.full((horizon, baselines, targets), np.nan)
        self._skill: tuple[Optional[float], ...] = (None,) * baselines

    def add(
        self,
        hit: np.ndarray,
        truth: np.ndarray,
        values: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        base: np.ndarray,
        interval: ConformalBand,
    ) -> None:
        """Score forecasts ``(n, horizon, targets)`` (``base``: ``(n, horizon, baselines,
        targets)``) against ``truth`` where ``hit`` ``(n, horizon)``; forecasts in the order
        they were made. The band's miss probabilities adapt to the misses (ACI)."""
        horizon, n_t = hit.shape[1], truth.shape[-1]
        # Flat indices (forecast-major: each step's hits oldest first) and 1-d takes: a
        # third of the two-index fancy indexing's cost on these small arrays.
        flat = np.flatnonzero(hit)
        h_idx = flat % horizon
        actual = truth.reshape(-1, n_t)[flat]  # (k, targets)
        lo = lower.reshape(-1, n_t)[flat]
        up = upper.reshape(-1, n_t)[flat]
        side = np.where(actual < lo, -1.0, np.where(actual > up, 1.0, 0.0))
        side[np.isnan(lo)] = np.nan
        chan = np.empty((len(flat), self.ring.shape[0], n_t))
        chan[:, 0] = actual - values.reshape(-1, n_t)[flat]
        chan[:, 1] = side
        chan[:, 2:] = np.abs(actual[:, None, :] - base.reshape(-1, *base.shape[2:])[flat])
        known, below, above = (np.empty((horizon, n_t)) for _ in range(3))
        for j in range(n_t):  # targets: one or a few
            col = side[:, j]
            known[:, j] = np.bincount(h_idx, np.isfinite(col), horizon)
            below[:, j] = np.bincount(h_idx, col < 0, horizon)
            above[:, j] = np.bincount(h_idx, col > 0, horizon)
        interval.adapt(known, below, above)
        # Ring rows: the step's next row on, for its k hits; beyond ``samples`` only the
        # newest are kept (each row written once).
        per_step = hit.sum(axis=0)
        rank = (np.cumsum(hit, axis=0) - 1).ravel()[flat]
        rows = (self.next[h_idx] + rank) % self.samples
        if int(per_step.max()) > self.samples:  # more hits than the ring holds
            keep = rank >= (per_step - self.samples)[h_idx]
            h_idx, rows, chan = h_idx[keep], rows[keep], chan[keep]
        self.ring[:, h_idx, :, rows] = chan
        self.next += per_step
        self.total += len(flat)
        self.dirty = self.band_dirty = True

    def refresh_band(self, interval: ConformalBand) -> None:
        """Recompute the band's offsets from the ring (the figures wait until asked for)."""
        residuals = self.ring[0]
        interval.refresh(residuals, np.isfinite(residuals).sum(axis=-1))
        self.band_dirty = False

    def refresh(self) -> None:
        """Recompute the figures from the ring."""
        ring, least = self.ring, self.min_samples
        finite = np.isfinite(ring)
        counted = finite.sum(axis=-1)  # (channels, steps, targets)
        total = np.where(finite, np.abs(ring), 0.0).sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            means = np.where(counted > 0, total / counted, np.nan)
        self.counts = counts = counted[0]
        self.mae = means[0]
        inside = (ring[1] == 0).sum(axis=-1) / np.maximum(counted[1], 1)
        self.coverage = np.where(counted[1] >= least, inside, np.nan)
        self.base_mae = np.moveaxis(means[2:], 0, 1)  # (steps, baselines, targets)
        enough = (counts >= least)[:, None, :] & (self.base_mae > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = self.mae[:, None, :] / self.base_mae
        self.skill_by_step = np.where(enough, 1.0 - ratio, np.nan)
        self._skill = tuple(self._overall(b, counts >= least) for b in range(len(ring) - 2))
        self.dirty = False

    def recent_mae(self, keep: np.ndarray) -> np.ndarray:
        """MAE per step and target over each step's newest ``keep[step]`` residuals (at most
        the ones kept): this model's error on the same forecasts as a tracker that started
        later (a shadow's), so the two compare on the same actuals."""
        ring = self.ring[0]  # (steps, targets, samples)
        samples = ring.shape[-1]
        out = np.full(ring.shape[:2], np.nan)
        for step in range(ring.shape[0]):
            k = int(min(keep[step], samples, self.next[step]))
            if k > 0:
                rows = (self.next[step] - 1 - np.arange(k)) % samples
                seen = ring[step][:, rows]
                with np.errstate(invalid="ignore"):
                    out[step] = np.nanmean(np.abs(seen), axis=-1)
        return out

    def _overall(self, b: int, enough: np.ndarray) -> Optional[float]:
        base = self.base_mae[:, b]
        seen = enough & np.isfinite(base)
        if not seen.any():
            return None
        denominator = float(np.mean(base[seen]))
        if denominator <= 0:
            return None
        return 1.0 - float(np.mean(self.mae[seen])) / denominator

    def skill(self, names: tuple[str, ...]) -> dict[str, Optional[float]]:
        """Per baseline (``names`` in order): ``1 - MAE_model / MAE_baseline`` over the steps
        with ``min_samples`` residuals, as of the last :meth:`refresh` (None: none has)."""
        return dict(zip(names, self._skill))
