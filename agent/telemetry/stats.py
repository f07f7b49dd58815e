"""Typed counters of a running agent, and the view of a stream that telemetry reads.

Only the main loop writes these (no locks): it bumps plain integers and a fixed-bucket
latency histogram. :mod:`~sensorcast.agent.telemetry.metrics`, the summary log and the
tests read them through :meth:`StreamStats.as_dict`, one shape for all three.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional, Protocol

from sensorcast.agent.config import StreamConfig
from sensorcast.agent.forecast.manifest import Manifest
from sensorcast.agent.forecast.runtime import Runtime
from sensorcast.agent.telemetry.quality import QualityTracker

__all__ = [
    "BUCKETS",
    "AnomalyView",
    "Counted",
    "ForecasterView",
    "LatencyHistogram",
    "ShadowView",
    "StreamStats",
    "StreamView",
]

#: Inference latency buckets, seconds (upper bounds; +Inf implied).
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class LatencyHistogram:
    """Cumulative-at-read histogram of forecast (model invoke) times, seconds."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0  #: Seconds, all observations together.
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Count one forecast call that took ``seconds``."""
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(upper bound, observations <= it), ..., ("+Inf", count)]``."""
        out, total = [], 0
        for bound, n in zip((*map(str, BUCKETS), "+Inf"), list(self.counts)):
            total += n
            out.append((bound, total))
        return out


class StreamStats:
    """One stream's counters, since the agent started.

    A stream carries them as its own attributes (``streams.Stream`` derives from this
    class) so the hot path bumps a plain attribute per reading, with no lookup of a
    separate counters object.
    """

    def __init__(self) -> None:
        self.accepted = 0  #: Readings a window took.
        self.rejected: dict[str, int] = {}  #: Readings the window refused, by reason.
        self.forecasts = 0  #: Forecasts made (and queued in the outbox).
        self.batched = 0  #: Of those, made in one call with other streams' windows.
        #: Of those, made from a window outside the bundle's verified range (marked
        #: ``out_of_range``; not the readings ``rejected`` as ``out_of_range``).
        self.forecasts_out_of_range = 0
        self.out_of_range_now = False  #: The latest forecast was marked ``out_of_range``.
        #: Forecasts published as the naive baseline's (``"fallback": "last_value"``).
        self.forecasts_fallback = 0
        self.anomalies = 0  #: Anomalies that started (each published on the anomaly topic).
        self.errors = 0  #: Exceptions from the model or window, each losing a forecast or reading.
        self.latency = LatencyHistogram()  #: Seconds per forecast call.
        self.last_forecast: Optional[float] = None  #: Window end of the latest forecast (Unix s).

    def as_dict(self, gaps: int, source_rejected: Iterable[Mapping[str, int]]) -> dict[str, Any]:
        """The counters as plain data: ``accepted``, ``rejected`` (by reason, the window's
        and the sources' own together), ``forecasts``, ``batched``, ``forecasts_out_of_range``,
        ``forecasts_fallback``, ``anomalies``, ``gaps`` and ``errors``.

        ``source_rejected`` are the stream's sources' counts, which their threads write:
        each is copied before it is read.
        """
        rejected = dict(self.rejected)
        for counts in source_rejected:
            for reason, n in list(counts.items()):
                rejected[reason] = rejected.get(reason, 0) + n
        return {
            "accepted": self.accepted,
            "rejected": rejected,
            "forecasts": self.forecasts,
            "batched": self.batched,
            "forecasts_out_of_range": self.forecasts_out_of_range,
            "forecasts_fallback": self.forecasts_fallback,
            "anomalies": self.anomalies,
            "gaps": gaps,
            "errors": self.errors,
        }


class Counted(Protocol):
    """A source as telemetry reads it: the input messages it parsed (MQTT messages, lines,
    reads; each may carry several readings)."""

    @property
    def messages(self) -> int:
        """Input messages since the start."""


class AnomalyView(Protocol):
    """A stream's anomaly detector as telemetry reads it."""

    @property
    def active(self) -> bool:
        """An anomaly of the stream is open."""


class ShadowView(Protocol):
    """A stream's shadow model as telemetry reads it."""

    @property
    def label(self) -> str:
        """The shadow bundle's label."""

    @property
    def quality(self) -> Optional[QualityTracker]:
        """Its forecasts against the same actuals."""

    def report(self) -> dict[str, Any]:
        """What the quality message carries under ``"shadow"``."""

    def maes(self) -> Optional[tuple[float, float]]:
        """Its rolling MAE and the live model's, on the same actuals (None: too few yet)."""


class ForecasterView(Protocol):
    """A stream's forecaster as telemetry reads it."""

    @property
    def runtime(self) -> Runtime:
        """The interpreter it runs on."""


class StreamView(Protocol):
    """A stream as telemetry reads it (``streams.Stream`` is one). Telemetry names this
    protocol, not the stream's class, so it imports nothing that imports it."""

    @property
    def name(self) -> str:
        """The stream's name from the config."""

    @property
    def label(self) -> str:
        """The running bundle's ``name@sha256-prefix``."""

    @property
    def manifest(self) -> Manifest:
        """The running bundle's manifest."""

    @property
    def quality(self) -> Optional[QualityTracker]:
        """Forecast against actual, when the stream's targets are among its features."""

    @property
    def forecasts(self) -> int:
        """Forecasts made since the start."""

    @property
    def latency(self) -> LatencyHistogram:
        """Seconds per forecast call."""

    @property
    def last_forecast(self) -> Optional[float]:
        """Window end of the latest forecast (Unix s)."""

    @property
    def cfg(self) -> StreamConfig:
        """The stream's config."""

    @property
    def forecaster(self) -> ForecasterView:
        """The running bundle's forecaster."""

    @property
    def sources(self) -> Sequence[Counted]:
        """Where its readings come from."""

    @property
    def anomaly(self) -> Optional[AnomalyView]:
        """Its anomaly detector, if ``quality.anomaly``."""

    @property
    def shadow(self) -> Optional[ShadowView]:
        """Its shadow model, if one runs."""

    @property
    def fallback_active(self) -> bool:
        """The naive baseline's forecast is published in the model's place."""

    @property
    def anomalies(self) -> int:
        """Anomalies that started since the start."""

    #: When the stream's quality report was last published (monotonic s).
    quality_sent: float

    def counters(self) -> dict[str, Any]:
        """:meth:`StreamStats.as_dict` of the stream."""
