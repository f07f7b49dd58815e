"""Streams: each configured stream with its model, window and publisher.

:func:`load_streams` builds them at start, all or nothing; :func:`equip` gives a stream its
publisher and trackers, at start and whenever a new bundle is swapped in
(:mod:`~sensorcast.agent.reloader`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from sensorcast.agent.config import Config, StreamConfig
from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.forecaster import Forecaster, Rollout, check_fits
from sensorcast.agent.forecast.manifest import (
    DEFAULT_MAX_BUNDLE_BYTES,
    Bundle,
    Manifest,
    read_bundle,
)
from sensorcast.agent.forecast.runtime import Runtime, load_runtime
from sensorcast.agent.publish.link import MqttLink
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.publish.payload import ForecastPublisher
from sensorcast.agent.shadow import Shadow
from sensorcast.agent.sources.base import ReadingSink, Source
from sensorcast.agent.sources.registry import build_sources
from sensorcast.agent.telemetry.anomaly import AnomalyDetector
from sensorcast.agent.telemetry.quality import QualityTracker
from sensorcast.agent.telemetry.stats import StreamStats
from sensorcast.agent.window import MIN_TS, Window

__all__ = ["Predict", "Stream", "attach", "build_window", "equip", "load_model", "load_streams"]

logger = logging.getLogger(__name__)

#: A stream's model as a function: window ``(window, features)`` -> ``(steps, targets)``.
Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(eq=False)
class Stream(StreamStats):
    """One stream's state, owned by the main loop; its counters are its own attributes
    (:class:`StreamStats`)."""

    index: int
    cfg: StreamConfig
    bundle: Bundle
    forecaster: Forecaster
    window: Window
    predict: Predict
    publisher: Optional[ForecastPublisher] = None
    sources: list[Source] = field(default_factory=list)
    due: bool = False  #: The window moved and awaits its forecast.
    gaps_seen: int = 0  #: Gaps already reported.
    model_key: tuple[int, int] = (0, 0)  #: The model file's (mtime ns, size) when loaded.
    quality: Optional[QualityTracker] = None  #: Forecast vs actual, if targets are features.
    quality_sent: float = 0.0  #: When its quality report was last published (monotonic s).
    quality_judged: float = 0.0  #: When drift was last judged (monotonic s).
    #: Swapped in by an update, not yet forecast from: failing in use, it goes back to
    #: ``.previous``.
    trial: bool = False
    anomaly: Optional[AnomalyDetector] = None  #: Raises anomalies, if ``quality.anomaly``.
    shadow: Optional[Shadow] = None  #: The shadow bundle, if one is configured or installed.
    fallback_active: bool = False  #: Publishing the naive baseline's forecast (``fallback``).
    fallback_below_since: Optional[float] = None  #: Since when (Unix s) skill stayed < 0.

    def __post_init__(self) -> None:
        StreamStats.__init__(self)

    @property
    def name(self) -> str:
        """The stream's name from the config."""
        return self.cfg.name

    @property
    def label(self) -> str:
        """The running bundle's ``name@sha256-prefix``."""
        return self.bundle.label

    @property
    def manifest(self) -> Manifest:
        """The running bundle's manifest."""
        return self.bundle.manifest

    def counters(self) -> dict[str, Any]:
        """Accepted, rejected (the window's and the sources'), forecasts, batched, gaps,
        errors: the shape logs, metrics and tests read."""
        return self.as_dict(self.window.gaps, (source.rejected for source in self.sources))


def load_streams(cfg: Config, runtime: Optional[Runtime] = None) -> list[Stream]:
    """Load each stream's bundle, check it fits the stream, and build its window.

    Raises :class:`ModelError` naming the stream and the problem.
    """
    runtime = runtime or load_runtime()
    streams = []
    for i, sc in enumerate(cfg.streams):
        bundle, forecaster, predict = load_model(sc, runtime, cfg.models.max_bytes)
        streams.append(Stream(i, sc, bundle, forecaster, build_window(sc, bundle), predict))
    return streams


def load_model(
    sc: StreamConfig, runtime: Runtime, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
) -> tuple[Bundle, Forecaster, Predict]:
    """Read a stream's bundle (at most ``max_bytes``), check it fits, make its forecaster."""
    try:
        bundle = read_bundle(sc.model, max_bytes)
        check_fits(bundle, sc.features, sc.name)
        _check_inputs(sc, bundle.manifest)
        forecaster = Forecaster(bundle, runtime)
        predict = forecaster.predict
        if sc.rollout_steps is not None:
            predict = Rollout(forecaster, sc.rollout_steps).predict
    except ModelError as exc:
        message = str(exc)
        if not message.startswith(f"stream {sc.name}"):
            message = f"stream {sc.name}: {message}"
        raise ModelError(message) from exc
    return bundle, forecaster, predict


def build_window(sc: StreamConfig, bundle: Bundle) -> Window:
    """The stream's window for the bundle: its length, features and period, the stream's
    limits."""
    m = bundle.manifest
    return Window(
        len(m.features),
        m.window,
        m.period_s,
        max_gap_s=sc.max_gap_s,
        resample=sc.resample,
        close_delay_s=sc.close_delay_s,
        max_future_s=sc.max_future_s,
        min_ts=MIN_TS,
        computed=[(m.features.index(f), kind) for f, kind in m.computed.items()],
    )


def _check_inputs(sc: StreamConfig, m: Manifest) -> None:
    """Every sensor feature needs a source, every per-feature input a sensor feature; the
    features computed from time need none (the window computes them)."""
    features = m.sensor_features
    for source in sc.sources:
        if source.feature is not None and source.feature in m.computed:
            raise ModelError(
                f"stream {sc.name}: {source.where}: feature {source.feature!r} is computed "
                f"from time ({m.computed[source.feature]}) by the agent; remove this input"
            )
        if source.feature is not None and source.feature not in features:
            raise ModelError(
                f"stream {sc.name}: {source.where} names feature {source.feature!r}, but the "
                f"model's features are {', '.join(m.features)}"
            )
    if m.computed and sc.rollout_steps is not None:
        raise ModelError(
            f"stream {sc.name}: rollout_steps cannot roll the computed time features "
            f"({', '.join(m.computed)}) forward; remove rollout_steps, or train a model that "
            "forecasts every step (--horizon)"
        )
    if sc.input_topic is not None or any(s.feature is None for s in sc.sources):
        return  # a whole-stream source may carry every feature
    missing = [f for f in features if f not in {s.feature for s in sc.sources}]
    if missing:
        raise ModelError(
            f"stream {sc.name}: no source for feature {', '.join(missing)}; add "
            f"[streams.inputs.{missing[0]}] or an input_topic"
        )


def attach(
    streams: list[Stream], cfg: Config, outbox: Outbox, link: MqttLink, sink: ReadingSink
) -> list[Source]:
    """Give each stream its publisher (into ``outbox``), quality tracker and sources (which
    hand readings to ``sink``; MQTT ones are subscribed on ``link``). Returns every source,
    for the caller to start and to close."""

    def subscribe(topic: str, handler: Callable[[bytes, float], None]) -> None:
        link.subscribe(topic, handler, qos=1)

    for s in streams:
        equip(s, cfg, outbox)
        features = s.bundle.manifest.features
        s.sources = build_sources(s.index, s.cfg, features, cfg.mqtt, subscribe, sink)
    return [source for s in streams for source in s.sources]


def equip(stream: Stream, cfg: Config, outbox: Outbox) -> None:
    """Give the stream a publisher (into ``outbox``) and a quality tracker for its current
    bundle: at start, and again when a new bundle is swapped in."""
    stream.publisher = _publisher(cfg, outbox, stream)
    stream.quality = _quality(cfg, stream)  # a new model makes its own promise
    old = stream.anomaly
    stream.anomaly = AnomalyDetector.for_stream(cfg.quality, stream.cfg, stream.bundle.manifest)
    if old is not None and stream.anomaly is not None:
        stream.anomaly.adopt(old)  # its open anomalies still end with a false


def _publisher(cfg: Config, outbox: Outbox, stream: Stream) -> ForecastPublisher:
    """The stream's publisher for its current bundle; ``seq`` goes on from the old one."""
    m = stream.bundle.manifest
    publisher = ForecastPublisher(
        outbox,
        cfg.device.id,
        stream.cfg.name,
        cfg.mqtt.topic_prefix,
        cfg.mqtt.qos,
        m.targets,
        m.period_s,
        retain=_retain(cfg, stream.cfg),
    )
    if stream.publisher is not None:
        publisher.seq = stream.publisher.seq  # seq goes on across a model reload
    return publisher


def _retain(cfg: Config, sc: StreamConfig) -> bool:
    """The stream's ``retain``, else ``mqtt.retain``, else whether discovery is on."""
    for choice in (sc.retain, cfg.mqtt.retain):
        if choice is not None:
            return choice
    return cfg.homeassistant.enabled


def _quality(cfg: Config, stream: Stream) -> Optional[QualityTracker]:
    """A tracker when the stream's targets are among its features (so readings show what
    happened): the promise, the band's start and the baselines are the manifest's."""
    return QualityTracker.for_stream(cfg.quality, stream.cfg, stream.bundle.manifest)
