"""Replay real data through the anomaly detector, clean and with injected faults.

Real parts only: the demo's 30 days of room data (``examples/demo/room-30d.csv``, 300 s),
the shipped demo bundle run by the agent's :class:`Forecaster` (no TensorFlow), the agent's
:class:`Window` fed reading by reading, and :class:`AnomalyDetector` called as the pipeline
calls it (``observe`` per closed period with the step-0 forecast made one period before and
its band, ``idle`` every half period). The band is split-conformal: the step-0 residual
quantiles of the first ``calib_days`` (what ``accuracy.residual_quantiles`` holds), fixed.

Faults start at random periods after the calibration days: a ``step`` of ``3 x`` the
target's standard deviation held for ``fault_periods``, a ``stuck`` sensor repeating its
value, a ``dropout`` of the target's readings. Delay: periods from the fault's first period
closing to the anomaly (0: raised when that period closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from sensorcast.agent.config import QualityConfig, StreamConfig
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.agent.telemetry.anomaly import AnomalyDetector
from sensorcast.agent.telemetry.quality import QualityTracker
from sensorcast.agent.window import Window

__all__ = [
    "FAULTS",
    "Replay",
    "Run",
    "detector",
    "fault_delays",
    "load_room",
    "quantize",
]

FAULTS = ("step", "stuck", "dropout", "silence")
REPO = Path(__file__).resolve().parents[2]
ROOM_30D = REPO / "examples" / "demo" / "room-30d.csv"
BUNDLE = REPO / "examples" / "demo" / "room.tflite"


def load_room(path: Path = ROOM_30D) -> tuple[np.ndarray, np.ndarray]:
    """``(ts, rows)``: Unix s and the (temperature, humidity) rows of a room CSV."""
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    ts: np.ndarray = data[:, 0]
    rows: np.ndarray = data[:, 1:]
    return ts, rows


def quantize(rows: np.ndarray, resolution: float = 0.1) -> np.ndarray:
    """The target rounded to a sensor's resolution (a DHT22's 0.1 C): flat runs that are
    genuine, which the stuck check must not flag."""
    out = rows.copy()
    out[:, 0] = np.round(out[:, 0] / resolution) * resolution
    return np.asarray(out)


def detector(stream: str = "room", **keys: Any) -> AnomalyDetector:
    """A detector for the demo's target (temperature, column 0), as the agent builds it."""
    return AnomalyDetector(stream, [("temperature", 0)], **keys)


@dataclass
class Run:
    """One replay's events: ``(period index, payload)`` in order."""

    events: list[tuple[int, dict[str, Any]]]

    def starts(self, first: int = 0) -> list[tuple[int, dict[str, Any]]]:
        """The anomalies that started at period ``first`` or later."""
        return [(i, p) for i, p in self.events if p["anomaly"] and i >= first]


class Replay:
    """The demo bundle's forecasts over a room series, and the band they are judged with:
    ``band="fixed"``, split-conformal (the first ``calib_days``' step-0 residual quantiles);
    ``band="agent"``, the agent's own :class:`QualityTracker` band (the manifest's residual
    quantiles, kept calibrated by adaptive conformal inference), as the pipeline publishes
    it."""

    def __init__(
        self,
        ts: np.ndarray,
        rows: np.ndarray,
        level: float = 0.8,
        calib_days: float = 7.0,
        band: str = "fixed",
    ) -> None:
        self.forecaster = Forecaster(read_bundle(BUNDLE))
        self.window = self.forecaster.bundle.manifest.window
        self.period_s = float(ts[1] - ts[0])
        self.ts, self.rows, self.level, self.band = ts, rows, level, band
        self.calib = int(calib_days * 86400 / self.period_s)
        self.fc = fc = self.forecasts(rows)  #: The clean data's forecasts.
        resid = rows[: self.calib, 0] - fc[: self.calib, 0]
        resid = resid[np.isfinite(resid)]
        self.q = np.quantile(resid, [(1 - level) / 2, (1 + level) / 2])
        self.target_std = float(rows[:, 0].std())

    def forecasts(self, rows: np.ndarray, first: int = 0, last: Optional[int] = None) -> np.ndarray:
        """``fc[i]``: the forecast (horizon steps of the target) made from the window ending
        at period ``i - 1``: ``fc[i, 0]`` is period ``i``'s."""
        w, end = self.window, len(rows) if last is None else last
        fc = np.full((len(rows), self.forecaster.horizon), np.nan)
        for i in range(max(first, w), end):
            fc[i] = self.forecaster.predict(rows[i - w : i])[:, 0]
        return fc

    def tracker(self) -> Optional[QualityTracker]:
        """A fresh agent tracker for ``band="agent"``, else None."""
        if self.band != "agent":
            return None
        sc = StreamConfig(name="room", model=BUNDLE, level=self.level)
        return QualityTracker.for_stream(QualityConfig(), sc, self.forecaster.bundle.manifest)

    def run(
        self,
        rows: np.ndarray,
        fc: np.ndarray,
        det: AnomalyDetector,
        present: Optional[np.ndarray] = None,
        span: tuple[int, int] = (0, -1),
    ) -> Run:
        """Feed ``rows[span]`` through a Window into ``det``; ``present[i, f]`` False: no
        reading of feature ``f`` in period ``i``."""
        first, last = span[0], len(rows) if span[1] < 0 else span[1]
        feed = _Feed(self, rows, fc, det, first)
        for i in range(first, last):
            t = float(self.ts[i])
            for f in range(rows.shape[1]):
                if present is None or present[i, f]:
                    feed.win.add(f, t + 1.0, float(rows[i, f]), t + 2.0)
                    feed.closed()
            for now in (t + 2.5, t + self.period_s / 2, t + self.period_s - 1.0):  # ticks
                feed.events.extend((i, p) for p in det.idle(feed.win, now))
                feed.win.close_due(now)
                feed.closed()
        return Run(feed.events)


class _Feed:
    """One replay's window, band and detector, in the pipeline's order per closed period:
    the tracker hears the actual, the detector judges it against the band published one
    period before, the next forecast's band is drawn."""

    def __init__(
        self, rp: Replay, rows: np.ndarray, fc: np.ndarray, det: AnomalyDetector, first: int
    ) -> None:
        self.rp, self.fc, self.det, self.first = rp, fc, det, first
        self.win = Window(rows.shape[1], rp.window, rp.period_s)
        self.tracker = rp.tracker()
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.base = round(rp.ts[0] / rp.period_s)  # the window's slots count from the epoch
        self.seen: Optional[int] = None
        self.band: Optional[tuple[np.ndarray, np.ndarray]] = None  # for the next period

    def closed(self) -> None:
        """Score the period that just closed, as the pipeline does: only when it is the one
        after the last (its forecast was made one period before) and the window is full."""
        c, win, fc = self.win.closed_through, self.win, self.fc
        if c is None or c == self.seen:
            return
        j, follows = c - self.base, self.seen is not None and c == self.seen + 1
        self.seen = c
        if self.tracker is not None:
            self.tracker.actual(c, win.view()[-1])
        if follows and win.ready and self.first <= j < len(fc) and np.isfinite(fc[j, 0]):
            actual = win.view()[-1, :1].astype(np.float64)
            lo, hi = self.band if self.band is not None else (None, None)
            got = self.det.observe(c, self.rp.period_s, actual, fc[j, :1], lo, hi)
            self.events.extend((j, p) for p in got)
        self.band = None
        if win.ready and j + 1 < len(fc) and np.isfinite(fc[j + 1, 0]):
            values = fc[j + 1][:, None]
            if self.tracker is None:
                self.band = (values[0] + self.rp.q[0], values[0] + self.rp.q[1])
                return
            band = self.tracker.band(values)
            self.band = None if band is None else (band[0][0], band[1][0])
            self.tracker.forecast(c, values, window=win.view())


def inject(rows: np.ndarray, kind: str, at: int, periods: int, size: float) -> np.ndarray:
    """A copy of ``rows`` with a fault in the target from period ``at`` for ``periods``."""
    out = rows.copy()
    if kind == "step":
        out[at : at + periods, 0] += size
    elif kind == "stuck":
        out[at : at + periods, 0] = out[at - 1, 0]
    return np.asarray(out)


def fault_delays(
    rp: Replay,
    kind: str,
    starts: list[int],
    fault_periods: int = 36,
    size: Optional[float] = None,
    **keys: Any,
) -> list[Optional[int]]:
    """Per fault start: periods from its first period to the first anomaly raised (None: not
    raised within the fault). ``size``: the step (default 3 x the target's std); ``silence``
    is a dropout of every feature (no period closes at all)."""
    delays: list[Optional[int]] = []
    w = rp.window
    step = 3 * rp.target_std if size is None else size
    for at in starts:
        rows = inject(rp.rows, kind, at, fault_periods, step)
        span = (at - 3 * w, at + fault_periods + 2 * w)
        fc = rp.forecasts(rows, span[0], span[1])
        present = None
        if kind in ("dropout", "silence"):
            present = np.ones(rows.shape, dtype=bool)
            present[at : at + fault_periods, : 1 if kind == "dropout" else None] = False
        run = rp.run(rows, fc, detector(**keys), present, span)
        # "stuck" starts one period earlier in the data: the value it repeats is at - 1.
        hits = [i for i, _ in run.starts(at - (kind == "stuck")) if i < at + fault_periods]
        delays.append(hits[0] - at if hits else None)
    return delays
