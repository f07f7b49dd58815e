"""What the pipeline does around each forecast so it can be trusted: the honest fallback to
a naive baseline, and feeding the anomaly detector the band each period was forecast with.

Fallback (``fallback = "last_value"`` on a stream): while the model's rolling skill against
that baseline (all steps, :meth:`QualityTracker.skill_now`) stays below zero for
``fallback_after_s`` of DATA time (window ends, so a fast replay behaves like the live
agent), the stream publishes the baseline's forecast, marked ``"fallback"``, with the
model's band offsets around it (the band's width is the model's residual spread: the best
estimate the device has; the baseline's own residual quantiles are not tracked). The
tracker keeps scoring the model's forecasts, so its recovery (skill >= 0) is seen and the
model's forecasts come back. Both switches are logged.

Anomalies: after each forecast its step-0 row and band are kept (preallocated, per stream);
when the next period closes, the detector hears the actual against them.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional, Union

import numpy as np
from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.streams import Stream
from sensorcast.agent.telemetry.quality import QualityTracker

__all__ = ["Trust"]

logger = logging.getLogger(__name__)

INFO_EVERY_S = 10.0  #: At most one "anomaly ended" line per stream and feature this often.


class _Step0:
    """The newest forecast's first step of one stream: its slot, values, band."""

    def __init__(self, sha256: str, targets: np.ndarray) -> None:
        self.sha256 = sha256
        self.targets = targets  #: Feature index of each target.
        first = int(targets[0]) if len(targets) else 0
        consecutive = [int(t) for t in targets] == list(range(first, first + len(targets)))
        #: The same as a slice when consecutive: a view of the window's row, not a copy.
        self.cols: Union[slice, np.ndarray] = (
            slice(first, first + len(targets)) if consecutive else targets
        )
        self.slot = -2
        n = len(targets)
        self.values = np.zeros(n)
        self.lower = np.zeros(n)
        self.upper = np.zeros(n)
        self.banded = False


class Trust:
    """Fallback decisions and the anomaly detectors' feed, for every stream of a pipeline;
    main loop only, no I/O beyond the streams' outboxes."""

    def __init__(self) -> None:
        self._log = RateLimitedLog(logger)
        self._step0: dict[int, _Step0] = {}
        self._info_next: dict[str, float] = {}

    def choose(
        self,
        stream: Stream,
        tracker: QualityTracker,
        values: np.ndarray,
        window: np.ndarray,
        window_end: float,
    ) -> tuple[np.ndarray, Optional[str]]:
        """The values to publish, and the baseline's name if they are its (the fallback)."""
        name = stream.cfg.fallback
        if name is None or not self._judge(stream, tracker, name, window_end):
            return values, None
        naive = tracker.baselines.forecast(name, window, values.shape[0])
        if naive is None:
            return values, None
        stream.forecasts_fallback += 1
        return naive, name

    def _judge(self, stream: Stream, tracker: QualityTracker, name: str, now: float) -> bool:
        """Whether the stream falls back now (``now``: data time, Unix s); logs switches."""
        skill = tracker.skill_now(name)
        if skill is not None and skill < 0:
            if stream.fallback_below_since is None:
                stream.fallback_below_since = now
            lost_for = now - stream.fallback_below_since
            if not stream.fallback_active and lost_for >= stream.cfg.fallback_after_s:
                stream.fallback_active = True
                logger.warning(
                    "stream %s: model %s has forecast worse than %s for %.0f s (skill %.3f): "
                    "publishing the %s forecast until the model beats it again",
                    stream.name, stream.label, name, lost_for, skill, name,
                )  # fmt: skip
            return stream.fallback_active
        stream.fallback_below_since = None
        if stream.fallback_active:
            stream.fallback_active = False
            logger.info(
                "stream %s: model %s forecasts at least as well as %s again (skill %s): "
                "publishing its forecasts",
                stream.name, stream.label, name, "unknown" if skill is None else f"{skill:.3f}",
            )  # fmt: skip
        return False

    def observe(self, stream: Stream, slot: int, window: np.ndarray) -> None:
        """Period ``slot`` closed (``window[-1]``): the detector judges it against the
        previous forecast's step 0, if that forecast was made one period before."""
        detector, prev = stream.anomaly, self._step0.get(stream.index)
        if detector is None or prev is None or prev.slot != slot - 1:
            return
        if prev.sha256 != stream.bundle.sha256:
            return  # a new model: its targets may differ
        band = prev.banded
        try:
            found = detector.observe(
                slot, stream.window.period_s, window[-1, prev.cols], prev.values,
                prev.lower if band else None, prev.upper if band else None,
            )  # fmt: skip
        except Exception as exc:  # the detector's fault must not cost the forecast
            self._error(stream, exc)
            return
        if found:
            self.publish(stream, found)

    def remember(
        self,
        stream: Stream,
        slot: int,
        values: np.ndarray,
        band: Optional[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """Keep the published forecast's step 0 for :meth:`observe` (copied, no allocation
        after the first)."""
        if stream.anomaly is None:
            return
        prev = self._step0.get(stream.index)
        if prev is None or prev.sha256 != stream.bundle.sha256:
            m = stream.bundle.manifest
            targets = np.array([m.features.index(t) for t in m.targets if t in m.features])
            if len(targets) != len(m.targets):
                return  # a target is no feature: nothing to compare it with
            prev = self._step0[stream.index] = _Step0(stream.bundle.sha256, targets)
        prev.slot = slot
        prev.values[:] = values[0]
        prev.banded = band is not None
        if band is not None:
            prev.lower[:] = band[0][0]
            prev.upper[:] = band[1][0]

    def idle(self, stream: Stream, now: float) -> None:
        """Every tick: the detector's dropout check (``now``: wall clock, Unix s)."""
        detector = stream.anomaly
        if detector is None:
            return
        try:
            found = detector.idle(stream.window, now)
        except Exception as exc:  # see observe
            self._error(stream, exc)
            return
        if found:
            self.publish(stream, found)

    def publish(self, stream: Stream, found: list[dict[str, Any]]) -> None:
        """Queue the detector's messages (retained, with the model) and log them: starts as
        warnings (rate-limited), ends as info (at most one per :data:`INFO_EVERY_S`)."""
        if stream.publisher is None:
            return
        for payload in found:
            stream.publisher.publish_anomaly(stream.label, payload)
            feature, reason = payload.get("feature"), payload.get("reason")
            key = f"{stream.name}:anomaly:{feature}"
            if payload.get("anomaly"):
                stream.anomalies += 1
                self._log.warning(
                    key, "stream %s: anomaly on %s (%s) since %s: actuals the forecast of "
                    "model %s cannot explain", stream.name, feature, reason,
                    payload.get("since_iso"), stream.label,
                )  # fmt: skip
            elif time.monotonic() >= self._info_next.get(key, 0.0):
                self._info_next[key] = time.monotonic() + INFO_EVERY_S
                logger.info("stream %s: anomaly on %s (%s) ended", stream.name, feature, reason)

    def _error(self, stream: Stream, exc: Exception) -> None:
        stream.errors += 1
        self._log.warning(
            f"{stream.name}:anomaly-error", "stream %s: anomaly detection failed: %s: %s",
            stream.name, type(exc).__name__, " ".join(str(exc).split()),
        )  # fmt: skip
