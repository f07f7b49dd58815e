"""The hot path, free of I/O: readings -> windows -> forecasts -> payloads in the outbox.

The main loop (or a benchmark, or a test) drives it with three calls:
:meth:`Pipeline.ingest` for each batch of readings, :meth:`Pipeline.tick` as the clock
moves, :meth:`Pipeline.forecast_due` after both. A forecast goes into the outbox through
its stream's :class:`~sensorcast.agent.publish.payload.ForecastPublisher`; sending it is
the sender's business, not this module's. Nothing here blocks, takes a lock, or allocates
per reading beyond what the window does.

A forecast made from a window with a value outside the range its bundle was verified on
(``manifest.verified_range``) is still published, marked ``"out_of_range": true``, and
counted: the stream's ``forecasts_out_of_range`` and its quality tracker's. One check per
forecast, on the window the sensors gave (a rollout's own predictions are not inputs
the range speaks of); the range is the running forecaster's, so it follows model reloads.

Each forecast goes out with its band (``level``, ``lower``, ``upper``: the stream's quality
tracker's, :mod:`~sensorcast.agent.telemetry.intervals`), or as the naive baseline's when
the stream falls back to it (:class:`~sensorcast.agent.trust.Trust`); the tracker scores the
model's forecast either way. The anomaly detector hears each closed period
against the previous forecast's first step, and gets every tick for its dropout check; its
messages go into the stream's outbox, retained. A shadow model forecasts the same window
after the live one.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.sources.base import Reading
from sensorcast.agent.streams import Stream
from sensorcast.agent.telemetry.quality import QualityTracker
from sensorcast.agent.trust import Trust
from sensorcast.agent.window import REASONS

__all__ = ["QUALITY_JUDGE_S", "Pipeline"]

logger = logging.getLogger(__name__)

QUALITY_JUDGE_S = 5.0  #: Drift is judged (and reports considered) at most this often, seconds.

#: ``failed(streams, exception, what was being done)``: a model or window raised.
OnFailure = Callable[[list[Stream], Exception, str], None]
#: ``report(stream, now)``: the stream's quality report may be due (``now``: drift changed).
OnQuality = Callable[[Stream, bool], None]


class Pipeline:
    """Feeds readings into the streams' windows and forecasts each window that moved.

    ``failed`` hears of every exception a model or window raised (the reading or forecast
    is lost, never the agent); ``quality`` is asked to report a stream's forecast quality
    at most every :data:`QUALITY_JUDGE_S`. Main loop only.
    """

    def __init__(
        self,
        streams: list[Stream],
        failed: OnFailure,
        quality: OnQuality = lambda _stream, _now: None,
        judge_s: float = QUALITY_JUDGE_S,
    ) -> None:
        self.streams = streams
        #: Drift judged and reports considered this often, s: at most :data:`QUALITY_JUDGE_S`,
        #: less when ``quality.interval_s`` asks for reports more often.
        self._judge_s = min(QUALITY_JUDGE_S, judge_s)
        self._failed = failed
        self._quality = quality
        self._log = RateLimitedLog(logger)
        self.trust = Trust()

    def ingest(self, batch: list[Reading], now: float) -> None:
        """Add a batch of readings to their streams' windows; ``now`` is the Unix time (s)
        the batch arrived. A reading that closes a period whose forecast is due forecasts
        it first; rejected readings are counted by reason and logged, rate-limited."""
        streams = self.streams
        for reading in batch:
            stream = streams[reading.stream]
            try:
                if stream.due and stream.window.appends_before(reading.ts):
                    self.forecast(stream)  # this window's forecast cannot wait for a batch
                result = stream.window.add(reading.feature, reading.ts, reading.value, now)
            except Exception as exc:  # a window made from a bad manifest: the reading is lost
                self._failed([stream], exc, "adding a reading")
                continue
            if result < 0:
                self._rejected(stream, reading, REASONS[result])
                continue
            stream.accepted += 1
            if stream.window.gaps != stream.gaps_seen:
                self._gap(stream)
            if result and stream.window.ready:
                stream.due = True

    def _rejected(self, stream: Stream, reading: Reading, reason: str) -> None:
        stream.rejected[reason] = stream.rejected.get(reason, 0) + 1
        self._log.warning(
            f"{stream.name}:{reason}",
            "stream %s: rejected a %s reading (%s)",
            stream.name,
            stream.bundle.manifest.features[reading.feature],
            reason,
        )

    def _gap(self, stream: Stream) -> None:
        stream.gaps_seen = stream.window.gaps
        self._log.warning(
            f"{stream.name}:gap",
            "stream %s: no reading for longer than max_gap_s; window emptied, "
            "forecasts resume when it is full again",
            stream.name,
        )

    def tick(self, now: float) -> None:
        """Close the periods that ended by ``now`` (Unix s) with no reading to close them;
        a window about to move is forecast first."""
        for stream in self.streams:
            if stream.anomaly is not None:
                self.trust.idle(stream, now)
            if not stream.window.closing_due(now):
                continue
            if stream.due:
                self.forecast(stream)  # the window is about to move: forecast it first
            if stream.window.close_due(now) and stream.window.ready:
                stream.due = True

    def forecast_due(self) -> None:
        """Forecast every stream whose window moved; streams sharing a batched model go in
        one call."""
        groups: dict[str, list[Stream]] = {}
        for stream in self.streams:
            if not stream.due:
                continue
            if stream.forecaster.batch_size > 1 and stream.cfg.rollout_steps is None:
                groups.setdefault(stream.bundle.sha256, []).append(stream)
            else:
                self.forecast(stream)
        for group in groups.values():
            if len(group) == 1:
                self.forecast(group[0])
            else:
                self._forecast_batch(group)

    def _forecast_batch(self, group: list[Stream]) -> None:
        windows = [s.window.view() for s in group]
        started = time.perf_counter()
        try:
            values = group[0].forecaster.predict_batch(windows)
            each = (time.perf_counter() - started) / len(group)
            beyond = [s.forecaster.out_of_range(w) for s, w in zip(group, windows)]
        except Exception as exc:  # see forecast
            self._failed(group, exc, "batched forecast")
            return
        for stream, forecast, out_of_range, window in zip(group, values, beyond, windows):
            stream.latency.observe(each)
            self._publish(stream, forecast, out_of_range, window)
            stream.batched += 1

    def forecast(self, stream: Stream) -> None:
        """Forecast the stream's window now and queue the forecast in the outbox."""
        window = stream.window.view()
        started = time.perf_counter()
        try:
            values = stream.predict(window)
            took = time.perf_counter() - started  # the model's time, not the range check's
            out_of_range = stream.forecaster.out_of_range_moved(window, stream.window.appended)
        except Exception as exc:  # one stream's broken model must not stop the agent
            self._failed([stream], exc, "forecast")
            return
        stream.latency.observe(took)
        self._publish(stream, values, out_of_range, window)

    def _publish(
        self, stream: Stream, values: np.ndarray, out_of_range: bool, view: np.ndarray
    ) -> None:
        """Publish a forecast made from ``view`` (the window's :meth:`~Window.view`)."""
        window = stream.window
        assert window.closed_through is not None and stream.publisher is not None
        slot = window.closed_through
        window_end = slot * window.period_s
        tracker = stream.quality
        band, published, fallback = None, values, None
        if tracker is not None:
            tracker.actual(slot, view[-1])  # the period just closed, before its band is drawn
            was = stream.fallback_active
            published, fallback = self.trust.choose(stream, tracker, values, view, window_end)
            band = tracker.band(published)
            if stream.fallback_active != was:
                self._quality(stream, True)  # the quality message says whether it falls back
        self.trust.observe(stream, slot, view)
        level = stream.cfg.level if tracker is None else tracker.level
        stream.publisher.publish(
            stream.bundle.label, window_end, published, out_of_range,
            fallback=fallback, level=level, band=band,
        )  # fmt: skip
        self.trust.remember(stream, slot, published, band)
        if tracker is not None:
            tracker.forecast(slot, values, out_of_range, view)  # the model's, even in fallback
        if stream.shadow is not None:  # before a report: both trackers on the same actuals
            stream.shadow.step(slot, view)
        if tracker is not None:
            self._judge_quality(stream, tracker)
        stream.forecasts += 1
        stream.forecasts_out_of_range += out_of_range
        if out_of_range != stream.out_of_range_now:
            self._range_changed(stream, out_of_range)
        stream.last_forecast = window_end
        stream.due = False
        stream.trial = False  # it forecast: the update stays

    def _range_changed(self, stream: Stream, out_of_range: bool) -> None:
        """Say (rate-limited) when a stream's windows leave the verified range; the details
        are worked out only then, not per forecast."""
        stream.out_of_range_now = out_of_range
        if out_of_range:
            self._log.warning(
                f"{stream.name}:out_of_range",
                "stream %s: window outside the range model %s was verified on (%s): its "
                "forecasts are published marked out_of_range",
                stream.name,
                stream.bundle.label,
                stream.forecaster.range_report(stream.window.view()),
            )

    def _judge_quality(self, stream: Stream, tracker: QualityTracker) -> None:
        """Judge drift (at most every :data:`QUALITY_JUDGE_S`) and let the report go."""
        mono = time.monotonic()
        if mono - stream.quality_judged < self._judge_s:
            return  # drift is a matter of hours: judging it costs more than a forecast
        stream.quality_judged = mono
        change = tracker.update_drift(time.time())
        if change == "start":
            logger.warning(
                "stream %s: forecast error has stayed above %g x what model %s promised for "
                "%.0f s: drift; the model may need retraining",
                stream.name,
                tracker.drift_factor,
                stream.bundle.label,
                tracker.drift_after_s,
            )
        elif change == "end":
            logger.info("stream %s: forecast error back within the model's promise", stream.name)
        self._quality(stream, change is not None)
