"""Anomalies from forecasts: actuals the forecast's band cannot explain.

One :class:`AnomalyDetector` per stream watches each target feature for three kinds of
trouble, each opened and closed in DATA time (a period's start, Unix s), so a fast replay
of real data behaves like the live agent:

* **band** (reason ``"step"`` or ``"outside_band"``): the actual is standardised against the
  band published with the forecast made one period before: its centre, and ``sigma =
  (upper - lower) / (2 z)``, ``z`` the normal quantile of the stream's ``level`` (a biased
  or skewed residual distribution moves the centre, not the test). A two-sided CUSUM of
  these z-scores past :data:`CUSUM_H` is a ``"step"``: a sudden level shift, which the
  model half follows from its next window on (the residuals shrink over a few periods),
  and a single residual beyond ``CUSUM_K + CUSUM_H`` sigmas trips it at once.
  ``anomaly_periods`` consecutive periods beyond the ``anomaly_level`` band on the same
  side are ``"outside_band"``. Either ends after ``anomaly_periods`` consecutive periods
  back inside that band.
* **stuck**: a real reading with the very same value for ``stuck_periods`` periods or more,
  improbably long for the sensor or while the forecast expected it to move (see
  :data:`FINE`): a genuinely flat signal is forecast flat and is not flagged. It ends when
  the value changes.
* **dropout**: ``dropout_periods`` periods that should have closed with no reading for the
  target; checked by :meth:`AnomalyDetector.idle` on every tick, so a sensor that went
  silent altogether is seen although no period closes. Ends with the next reading.

Without a band (no residual quantiles nor ``forecast_mae`` yet), the scale falls back to
the manifest's step-0 ``forecast_mae`` (x 1.2533, a normal's sigma / MAE), then to the
detector's own running mean absolute residual once it has ``min_samples`` of them.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Optional

import numpy as np
from sensorcast.agent.config import QualityConfig, StreamConfig
from sensorcast.agent.forecast.manifest import Manifest
from sensorcast.agent.logutil import iso_utc
from sensorcast.agent.telemetry.targetstate import CUSUM_H, CUSUM_K, TargetState
from sensorcast.agent.window import Window

__all__ = ["CUSUM_H", "CUSUM_K", "FINE", "RUN_P", "STUCK_Z", "AnomalyDetector", "iso_utc"]

#: A run of equal readings is stuck if the sensor resolves at most ``FINE`` sigmas and the
#: run is rarer than ``RUN_P`` at the sensor's own rate of equal readings (the demo's 0.001 C:
#: 6 readings; the weather's 0.1 C repeats for hours on flat nights), or if the forecast
#: missed the repeats by a mean |z| of ``STUCK_Z`` (weather: 17 clean "stuck" alarms without
#: ``RUN_P`` and with ``STUCK_Z`` 1.0, 1 now).
FINE = 0.25
STUCK_Z = 1.5
RUN_P = 1e-6
#: Kinds of anomaly a feature can have open at once (the band's reasons share one).
_BAND, _STUCK, _DROPOUT = "band", "stuck", "dropout"


class AnomalyDetector:
    """One stream's anomaly state (see the module's docstring); main loop only.

    :meth:`observe` takes each closed period's actuals against the forecast made one period
    before; :meth:`idle` watches for dropouts. Both return the payloads to publish retained
    on the stream's anomaly topic: ``{"anomaly": true, ...}`` as each anomaly starts,
    ``{"anomaly": false, ...}`` when the last open one ends.
    """

    def __init__(
        self,
        stream: str,
        targets: list[tuple[str, int]],
        *,
        level: float = 0.8,
        anomaly_level: float = 0.99,
        anomaly_periods: int = 2,
        stuck_periods: int = 6,
        dropout_periods: int = 2,
        min_samples: int = 20,
        mae: Optional[list[float]] = None,
    ) -> None:
        self.stream = stream
        self._targets = [
            TargetState(name, col, None if mae is None else mae[i])
            for i, (name, col) in enumerate(targets)
        ]
        self._z_level = NormalDist().inv_cdf((1 + level) / 2)  # the published band's z
        self.anomaly_level = anomaly_level
        self.z_anomaly = NormalDist().inv_cdf((1 + anomaly_level) / 2)
        self.anomaly_periods = anomaly_periods
        self.stuck_periods = stuck_periods
        self.dropout_periods = dropout_periods
        self.min_samples = min_samples
        self._window: Optional[Window] = None  # the stream's window, as idle() last saw it
        self._clock_slot: Optional[int] = None  # newest closed slot, and when (wall s) it
        self._clock_at = 0.0  # closed: periods due since then count without a reading

    @classmethod
    def for_stream(
        cls, q: QualityConfig, sc: StreamConfig, m: Manifest
    ) -> Optional[AnomalyDetector]:
        """The stream's detector, or None (``quality.anomaly`` off, or no target is among the
        features, so no actual is ever seen)."""
        if not (q.enabled and q.anomaly):
            return None
        targets = [(t, m.features.index(t)) for t in m.targets if t in m.features]
        if not targets:
            return None
        mae: Optional[list[float]] = None
        if m.accuracy is not None and m.accuracy.forecast_mae:  # step 0: also a rollout's
            row = m.accuracy.forecast_mae[0]
            mae = [float(row[m.targets.index(t)]) for t, _ in targets]
        return cls(
            sc.name, targets, level=sc.level, anomaly_level=q.anomaly_level,
            anomaly_periods=q.anomaly_periods, stuck_periods=q.stuck_periods,
            dropout_periods=q.dropout_periods, min_samples=q.min_samples, mae=mae,
        )  # fmt: skip

    @property
    def active(self) -> bool:
        """True while any anomaly of the stream is open."""
        return any(t.open for t in self._targets)

    @property
    def open(self) -> list[dict[str, Any]]:
        """The open anomalies' start payloads (copies), oldest first."""
        found = [dict(p) for t in self._targets for p in t.open.values()]
        return sorted(found, key=lambda p: float(p["time"]))

    def started(self, now: float) -> dict[str, Any]:
        """The state at agent start, ``{"anomaly": false, ...}`` with no reason: it replaces
        a retained ``true`` an earlier run left (it cannot end it any more), and gives Home
        Assistant's binary sensor a state before the first anomaly."""
        return {
            "anomaly": False, "stream": self.stream, "feature": None, "reason": None,
            "since": None, "since_iso": None, "time": now, "time_iso": iso_utc(now),
        }  # fmt: skip

    def adopt(self, old: AnomalyDetector) -> None:
        """Take over the open anomalies (and runs) of the detector this one replaces (a new
        model for the stream), feature by feature, so each still ends with a ``false``."""
        before = {t.name: t for t in old._targets}
        for t in self._targets:
            prev = before.get(t.name)
            if prev is not None:
                t.open = dict(prev.open)
                t.dropout_last, t.frozen = prev.dropout_last, prev.frozen
                t.value, t.same, t.same_since, t.resolution = (
                    prev.value, prev.same, prev.same_since, prev.resolution
                )  # fmt: skip
        self._window, self._clock_slot, self._clock_at = old._window, old._clock_slot, old._clock_at

    def observe(
        self,
        slot: int,
        period_s: float,
        actual: np.ndarray,
        forecast: np.ndarray,
        lower: Optional[np.ndarray],
        upper: Optional[np.ndarray],
    ) -> list[dict[str, Any]]:
        """Period ``slot`` closed with ``actual`` (targets,); ``forecast``, ``lower`` and
        ``upper`` are the step-0 row (targets,) of the forecast made one period before, the
        band at the stream's level (None when no interval is known). Returns the payloads
        to publish (usually none)."""
        out: list[dict[str, Any]] = []
        start = slot * period_s
        window = self._window
        for i, t in enumerate(self._targets):
            if window is not None and window.last_reading_slot(t.feature) != slot:
                continue  # a carried value, no reading: the dropout check's business
            a, f = float(actual[i]), float(forecast[i])
            if not (math.isfinite(a) and math.isfinite(f)):
                continue
            centre, sigma = self._scale(t, a - f, f, lower, upper, i)
            if t.frozen is not None:  # the published band widens as it adapts to the anomaly:
                sigma, centre = t.frozen[0], f + t.frozen[1]  # its end is judged by the old one
            z = (a - centre) / sigma if sigma is not None else math.nan
            if math.isfinite(z) and sigma is not None:
                self._band(t, start, a, centre, z, sigma, out)
                if t.frozen is None and _BAND in t.open:
                    t.frozen = (sigma, centre - f)
            self._stuck(t, start, a, z, sigma, out)
        return out

    def next_idle(self, window: Window, now: float) -> Optional[float]:
        """Wall-clock time (Unix s) at which :meth:`idle` may next find a dropout: when the
        next period due without a reading passes; None if nothing can start by the clock
        (no closed period, or every target already in dropout or never read). Until
        :meth:`idle` has seen the window's newest closed period, ``now`` (its clock starts
        at that call)."""
        closed = window.closed_through
        if closed is None:
            return None
        if closed != self._clock_slot:
            return now
        last = window.last_reading_slot
        if all(t.dropout_last is not None or last(t.feature) is None for t in self._targets):
            return None
        period, delay = window.period_s, window.close_delay_s
        late = max(int((now - self._clock_at - delay) // period), 0)
        return self._clock_at + delay + (late + 1) * period

    def idle(self, window: Window, now: float) -> list[dict[str, Any]]:
        """Dropouts, checked every tick: ``now`` is the wall clock (Unix s). The periods a
        silent sensor misses are counted from when the window last moved, so old data
        replayed fast is judged by its own time, not by how old it is."""
        self._window = window
        closed = window.closed_through
        if closed is None:
            return []
        if closed != self._clock_slot:
            self._clock_slot, self._clock_at = closed, now
        late = int((now - self._clock_at - window.close_delay_s) // window.period_s)
        due = closed + max(late, 0)  # the newest period that should have closed by now
        out: list[dict[str, Any]] = []
        for t in self._targets:
            last = window.last_reading_slot(t.feature)
            if last is None:
                continue  # never read: the window is not ready, nothing to forecast
            if t.dropout_last is not None and last > t.dropout_last:
                self._end(t, _DROPOUT, last * window.period_s, out)
            elif t.dropout_last is None and due - last >= self.dropout_periods:
                t.dropout_last = last
                detail = {"periods": due - last, "last_reading": last * window.period_s}
                since, time_ = (last + 1) * window.period_s, due * window.period_s
                self._start(t, _DROPOUT, "dropout", since, time_, detail, out)
        return out

    def _scale(
        self,
        t: TargetState,
        residual: float,
        f: float,
        lower: Optional[np.ndarray],
        upper: Optional[np.ndarray],
        i: int,
    ) -> tuple[float, Optional[float]]:
        """The band's centre and sigma (its half-width over the level's z: the residual
        quantiles' bias and spread), else the forecast and the fallback scale."""
        centre, sigma = f, None
        if lower is not None and upper is not None:
            lo, hi = float(lower[i]), float(upper[i])
            if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
                centre, sigma = (lo + hi) / 2, (hi - lo) / (2 * self._z_level)
        if sigma is None:
            sigma = t.sigma(self.min_samples)
        if sigma is not None and abs(residual) <= self.z_anomaly * sigma:
            t.abs_sum += abs(residual)  # in-band residuals only: an anomaly must not widen it
            t.abs_n += 1
        return centre, sigma

    def _band(
        self,
        t: TargetState,
        start: float,
        a: float,
        centre: float,
        z: float,
        sigma: float,
        out: list[dict[str, Any]],
    ) -> None:
        """Step, outside_band, or back inside the band (``z``: the actual's, against the
        band's ``centre`` and ``sigma``)."""
        outside = abs(z) > self.z_anomaly
        sign = 1 if z > 0 else -1
        if outside and sign == t.out_sign:
            t.out_run += 1
        elif outside:
            t.out_run, t.out_sign, t.out_since = 1, sign, start
        else:
            t.out_run, t.out_sign = 0, 0
        shifted = t.cusum(z, start)
        if _BAND in t.open:
            t.in_run = 0 if outside else t.in_run + 1
            t.hi = t.lo = 0.0  # a fresh sum once it ends
            if t.in_run >= self.anomaly_periods:
                self._end(t, _BAND, start, out)
            return
        if shifted is not None:
            reason, since = "step", shifted
        elif t.out_run >= self.anomaly_periods:
            reason, since = "outside_band", t.out_since
        else:
            return
        t.in_run = 0
        t.hi = t.lo = 0.0
        half = self.z_anomaly * sigma
        detail = {
            "actual": a,
            "expected": centre,
            "residual": a - centre,
            "sigma": sigma,
            "z": z,
            "level": self.anomaly_level,
            "band": [centre - half, centre + half],
        }
        self._start(t, _BAND, reason, since, start, detail, out)

    def _stuck(
        self,
        t: TargetState,
        start: float,
        a: float,
        z: float,
        sigma: Optional[float],
        out: list[dict[str, Any]],
    ) -> None:
        """Runs of the very same reading; stuck when long and the forecast expected a move:
        the readings resolve far finer than its sigma (equal ones are then improbable), or
        it missed the repeats by :data:`STUCK_Z` on average (a coarse sensor)."""
        if math.isfinite(t.value) and _STUCK not in t.open:
            t.pairs += 1  # how often this sensor repeats itself (not counting a stuck run)
        if a != t.value:
            if _STUCK in t.open:
                self._end(t, _STUCK, start, out)
            if math.isfinite(t.value):
                t.resolution = min(t.resolution, abs(a - t.value))
            t.value, t.same, t.same_since, t.same_z = a, 1, start, 0.0
            return
        t.same += 1
        if _STUCK not in t.open:
            t.repeats += 1
        if math.isfinite(z):
            t.same_z += abs(z)  # the repeats only: did the forecast expect them to differ?
        if _STUCK in t.open or t.same < self.stuck_periods or sigma is None:
            return
        mean_z = t.same_z / (t.same - 1)
        repeat = (t.repeats + 1) / (t.pairs + 2)  # this sensor's own rate of equal readings
        rare = repeat ** (t.same - 1) < RUN_P  # such a run, were readings independent
        if (t.resolution <= FINE * sigma and rare) or mean_z >= STUCK_Z:
            detail = {"value": a, "periods": t.same, "mean_abs_z": mean_z, "sigma": sigma}
            self._start(t, _STUCK, "stuck", t.same_since, start, detail, out)

    def _start(
        self,
        t: TargetState,
        kind: str,
        reason: str,
        since: float,
        time_: float,
        detail: dict[str, Any],
        out: list[dict[str, Any]],
    ) -> None:
        payload: dict[str, Any] = {
            "anomaly": True, "stream": self.stream, "feature": t.name, "reason": reason,
            "since": since, "since_iso": iso_utc(since), "time": time_, "time_iso": iso_utc(time_),
        }  # fmt: skip
        payload.update(detail)
        t.open[kind] = payload
        out.append(payload)

    def _end(self, t: TargetState, kind: str, ended: float, out: list[dict[str, Any]]) -> None:
        """Close ``kind``; the stream's ``false`` only when nothing else is open."""
        started = t.open.pop(kind, None)
        if kind == _DROPOUT:
            t.dropout_last = None
        elif kind == _BAND:
            t.frozen = None
        if started is None or self.active:
            return
        out.append({
            "anomaly": False, "stream": self.stream, "feature": t.name,
            "reason": started["reason"], "since": started["since"],
            "since_iso": started["since_iso"], "ended": ended, "ended_iso": iso_utc(ended),
            "time": ended, "time_iso": iso_utc(ended),
        })  # fmt: skip
