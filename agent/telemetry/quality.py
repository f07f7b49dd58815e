"""Forecast quality on the device: what the model said against what then happened.

Each published forecast is remembered until its last step has passed, with the band
published with it and what the naive baselines (:mod:`.naive`) would have said from the same
window. When the window closes a period, that period's resampled readings are the actual
values for every pending forecast that had a step there: per step and target, the signed
residual (actual - forecast), where the actual fell against the band, and each baseline's
absolute error go into a rolling buffer of ``samples`` per step. From it:

- the rolling MAE per step, compared with the error the bundle's manifest promised
  (``accuracy.forecast_mae``); when it stays above ``drift_factor`` times the promise for
  ``drift_after_s``, the stream is flagged as drifting (the model needs retraining);
- the prediction interval (:mod:`.intervals`): split conformal on the signed residuals with
  adaptive conformal inference, started from the manifest's residual quantiles;
- the band's empirical coverage per step, and the model's skill against each baseline
  (``1 - MAE_model / MAE_baseline``), once a step has ``min_samples`` residuals.

The report also counts the forecasts made with this model, and how many of them came from
a window outside the range the bundle was verified on (``forecasts_out_of_range``).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from sensorcast.agent.config import QualityConfig, StreamConfig
from sensorcast.agent.forecast.manifest import Manifest
from sensorcast.agent.telemetry.intervals import ConformalBand, prior_quantiles
from sensorcast.agent.telemetry.naive import Baselines
from sensorcast.agent.telemetry.scores import Scores

__all__ = ["REFRESH", "QualityTracker"]

#: Actuals between two refreshes of the band from the residuals (each costs a scoring pass
#: of tens of microseconds; the band moves by a few hundredths per actual at most).
REFRESH = 32


class QualityTracker:
    """One stream's forecast-vs-actual bookkeeping; owned by the main loop.

    Forecasts and actuals are only copied into preallocated arrays as they come (a few
    microseconds each); residuals are worked out for many at once, in numpy, every
    :data:`REFRESH` actuals when a band is asked for, when a buffer fills, or when a figure
    is asked for.
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
        level: float = 0.8,
        prior: Optional[np.ndarray] = None,
        baselines: Optional[Baselines] = None,
    ) -> None:
        self.horizon = horizon
        self._targets = np.asarray(target_index, dtype=np.intp)
        n_targets = len(target_index)
        self.promised = np.asarray(promised, dtype=np.float64) if promised else None
        self.baselines = baselines or Baselines(horizon, target_index)
        n_base = len(self.baselines.names)
        self.level = level  #: Nominal coverage of the published band.
        self.interval = ConformalBand(
            level, horizon, n_targets, prior, min_samples, min(samples, 4 * min_samples)
        )
        self.scores = Scores(samples, horizon, n_base, n_targets, min_samples)
        # Forecasts whose steps have not all been scored: the slot each was made at, its
        # values, its band (NaN: none), the baselines' forecasts, how many steps are scored.
        self._cap = max(buffer, horizon + 2)
        self._made = np.zeros(self._cap, dtype=np.int64)
        self._values = np.zeros((self._cap, horizon, n_targets))
        self._lower = np.full((self._cap, horizon, n_targets), np.nan)
        self._upper = np.full((self._cap, horizon, n_targets), np.nan)
        self._base = np.full((self._cap, horizon, n_base, n_targets), np.nan)
        self._scored = np.zeros(self._cap, dtype=np.int64)
        self._n = 0
        # Actuals (whole rows, reading units) by slot, in the order the window closed them.
        self._row_slots = np.zeros(self._cap + horizon + 1, dtype=np.int64)
        self._rows: Optional[np.ndarray] = None  # (capacity, features), made on first use
        self._m = 0
        self._fresh = 0  # actuals since the last scoring pass
        self._steps = np.arange(horizon, dtype=np.int64)
        self._band = (np.empty((horizon, n_targets)), np.empty((horizon, n_targets)))
        self.drift_factor = drift_factor
        self.drift_after_s = drift_after_s
        self.min_samples = min_samples
        self._above_since: Optional[float] = None
        self.drifting = False
        self.forecasts = 0  #: Forecasts made since this tracker (this model) started.
        #: Of those, made from a window outside the bundle's verified range.
        self.forecasts_out_of_range = 0

    @classmethod
    def for_stream(
        cls, q: QualityConfig, sc: StreamConfig, m: Manifest
    ) -> Optional[QualityTracker]:
        """The stream's tracker, or None when quality is off or a target is not among the
        features (readings would never show what happened). A rolled-out model's promise
        is for its one step, so it promises nothing here; its band starts from that step's
        quantiles, widened for the later steps."""
        if not q.enabled or not set(m.targets) <= set(m.features):
            return None
        rollout = sc.rollout_steps
        horizon = rollout or m.horizon
        targets = [m.features.index(t) for t in m.targets]
        acc = m.accuracy
        return cls(
            horizon,
            targets,
            acc.forecast_mae if acc is not None and rollout is None else (),
            samples=q.samples,
            drift_factor=q.drift_factor,
            drift_after_s=q.drift_after_s,
            min_samples=q.min_samples,
            level=sc.level,
            prior=prior_quantiles(acc, horizon, len(targets)),
            baselines=Baselines.for_manifest(m, horizon, targets),
        )

    @property
    def residuals(self) -> int:
        """Residuals counted since start (one per forecast and step)."""
        self._score()
        return self.scores.total

    def band(self, values: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """``(lower, upper)`` around ``(horizon, targets)`` values at :attr:`level` (target
        units; two arrays reused by the next call: copy them to keep them), or None while
        no band is known."""
        self._keep_fresh()
        offsets = self.interval.offsets
        if offsets is None:
            return None
        lower, upper = self._band
        if lower.shape != values.shape:
            lower, upper = self._band = (np.empty(values.shape), np.empty(values.shape))
        np.add(values, offsets[0], out=lower)
        np.add(values, offsets[1], out=upper)
        return lower, upper

    def forecast(
        self,
        slot: int,
        values: np.ndarray,
        out_of_range: bool = False,
        window: Optional[np.ndarray] = None,
    ) -> None:
        """A forecast made when the window's newest closed period was ``slot``;
        ``out_of_range``: from a window outside the bundle's verified range; ``window``: the
        ``(window, features)`` it was made from, for the baselines (None: not scored against
        them). Its band is the current one (:meth:`band`)."""
        self.forecasts += 1
        self.forecasts_out_of_range += out_of_range
        self._keep_fresh()
        if self._n == self._cap:
            self._score()
            if self._n == self._cap:  # no actuals came: the oldest forecasts can never score
                self._drop_forecasts(self._n - self.horizon - 1)
        n = self._n
        self._made[n] = slot
        self._values[n] = values
        offsets = self.interval.offsets
        if offsets is None:
            self._lower[n] = np.nan
            self._upper[n] = np.nan
        else:
            np.add(values, offsets[0], out=self._lower[n])
            np.add(values, offsets[1], out=self._upper[n])
        if window is None:
            self._base[n] = np.nan
        else:
            self.baselines.fill(window, self._base[n])
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
        self._fresh += 1

    def _score(self) -> None:
        """Score every forecast step whose actual has come, into the rolling buffers."""
        self._fresh = 0
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
            pos = np.minimum(np.searchsorted(slots[order], want), m - 1)
            idx = order[pos]
            hit = pending & (slots[idx] == want) & usable[idx]
            if hit.any():
                self.scores.add(
                    hit, truth[idx], self._values[:n], self._lower[:n], self._upper[:n],
                    self._base[:n], self.interval,
                )  # fmt: skip
            # Steps up to the latest actual are settled (a step with no usable actual is lost).
            # np.minimum/maximum: np.clip's wrapper costs more than both on small arrays
            now_scored = np.minimum(np.maximum(latest - self._made[:n], 0), self.horizon)
            np.maximum(self._scored[:n], now_scored, out=self._scored[:n])
        # Keep the forecasts with steps still to come, and the actuals they may need.
        keep = self._made[:n] + self.horizon > latest
        self._compact_forecasts(keep)
        # With nothing pending, no actual is needed again.
        oldest = int(self._made[: self._n].min()) if self._n else latest
        needed = slots > oldest
        k = int(np.count_nonzero(needed))
        self._row_slots[:k] = slots[needed]
        self._rows[:k] = self._rows[:m][needed]
        self._m = k

    def _compact_forecasts(self, keep: np.ndarray) -> None:
        n = self._n
        k = int(np.count_nonzero(keep))
        if k == n:
            return
        for array in (self._made, self._values, self._lower, self._upper, self._base):
            array[:k] = array[:n][keep]
        self._scored[:k] = self._scored[:n][keep]
        self._n = k

    def _drop_forecasts(self, count: int) -> None:
        keep = np.ones(self._n, dtype=bool)
        keep[: max(count, 0)] = False
        self._compact_forecasts(keep)

    def _keep_fresh(self) -> None:
        """Score and refresh the band every :data:`REFRESH` actuals (ACI needs the misses
        soon, not when a buffer fills)."""
        if self._fresh >= REFRESH:
            self._score()
        if self.scores.band_dirty:
            self.scores.refresh_band(self.interval)

    def _fresh_scores(self) -> Scores:
        self._score()
        if self.scores.band_dirty:
            self.scores.refresh_band(self.interval)
        if self.scores.dirty:
            self.scores.refresh()
        return self.scores

    def mae(self) -> np.ndarray:
        """Rolling MAE per step and target (NaN where nothing was seen yet)."""
        return self._fresh_scores().mae

    def coverage(self) -> np.ndarray:
        """Rolling share of actuals inside the band published with their forecast, per step
        and target (NaN below ``min_samples`` forecasts that had a band)."""
        return self._fresh_scores().coverage

    def coverage_mean(self) -> Optional[float]:
        """:meth:`coverage` over the steps and targets that have enough samples, or None."""
        return _mean(self.coverage())

    def skill(self) -> dict[str, Optional[float]]:
        """Per baseline: ``1 - MAE_model / MAE_baseline`` over the steps with ``min_samples``
        residuals (None: none has). Below 0 the model loses to the baseline."""
        return self._fresh_scores().skill(self.baselines.names)

    def skill_now(self, name: str) -> Optional[float]:
        """:meth:`skill` against ``name`` as of the last scoring pass (none of its own:
        cheap enough to ask on every forecast)."""
        if self.scores.dirty:
            self.scores.refresh()
        return self.scores.skill(self.baselines.names).get(name)

    def skill_by_step(self) -> dict[str, np.ndarray]:
        """Per baseline: skill per step and target (NaN below ``min_samples``)."""
        s = self._fresh_scores()
        return {name: s.skill_by_step[:, b] for b, name in enumerate(self.baselines.names)}

    def baseline_mae_by_step(self) -> dict[str, np.ndarray]:
        """Per baseline: its rolling MAE per step and target (NaN where nothing was seen)."""
        s = self._fresh_scores()
        return {name: s.base_mae[:, b] for b, name in enumerate(self.baselines.names)}

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
        s = self._fresh_scores()
        seen = s.counts >= self.min_samples
        if not seen.any():
            return None
        promised = self.promised[seen]
        if not (promised > 0).all():
            return None
        return float(np.mean(s.mae[seen]) / np.mean(promised))

    def report(self, stream: str, model: str, now: float) -> dict[str, Any]:
        """The quality message's body."""
        s = self._fresh_scores()
        ratio = self.ratio()
        names = self.baselines.names
        return {
            "stream": stream,
            "model": model,
            "time": now,
            "residuals": s.total,
            "forecasts": self.forecasts,
            "forecasts_out_of_range": self.forecasts_out_of_range,
            "samples_by_step": s.counts[:, 0].tolist(),
            "mae_by_step": _table(s.mae),
            "promised_mae_by_step": self.promised.tolist() if self.promised is not None else None,
            "ratio": None if ratio is None else round(ratio, 4),
            "drift": self.drifting,
            "drift_factor": self.drift_factor,
            "level": self.level,
            "coverage": _num(np.nan if (c := _mean(s.coverage)) is None else c),
            "coverage_by_step": _table(s.coverage),
            "skill": {k: None if v is None else round(v, 4) for k, v in s.skill(names).items()},
            "skill_by_step": {n: _table(s.skill_by_step[:, b]) for b, n in enumerate(names)},
            "baseline_mae_by_step": {n: _table(s.base_mae[:, b]) for b, n in enumerate(names)},
        }


def _mean(table: np.ndarray) -> Optional[float]:
    seen = np.isfinite(table)
    return float(np.mean(table[seen])) if seen.any() else None


def _table(table: np.ndarray) -> list[list[Optional[float]]]:
    return [[_num(v) for v in row] for row in table]


def _num(value: float) -> Optional[float]:
    return None if not np.isfinite(value) else round(float(value), 6)
