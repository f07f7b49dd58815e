"""Streams: each configured stream with its model, window and publisher, and hot model
reload.

:func:`load_streams` builds them at start, all or nothing. :class:`ModelReloader` swaps a
changed model file in between two forecasts (a file edited by hand, SIGHUP, or a bundle
:class:`~sensorcast.agent.control.updates.ModelUpdater` installed); a bundle that fails to
load leaves the old one running, and one an update installed goes back to
``<model>.previous`` if it fails to load or fails in use.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from sensorcast.agent.config import Config, StreamConfig
from sensorcast.agent.control.updates import ModelUpdater, restore_previous
from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.forecaster import Forecaster, Rollout, check_fits
from sensorcast.agent.forecast.manifest import (
    DEFAULT_MAX_BUNDLE_BYTES,
    Bundle,
    Manifest,
    read_bundle,
)
from sensorcast.agent.forecast.runtime import Runtime, load_runtime
from sensorcast.agent.logutil import RateLimitedLog
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

__all__ = ["ModelReloader", "Predict", "Stream", "attach", "build_window", "equip", "load_model"]
__all__ += ["load_streams"]

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
        retain=cfg.mqtt.retain if stream.cfg.retain is None else stream.cfg.retain,
    )
    if stream.publisher is not None:
        publisher.seq = stream.publisher.seq  # seq goes on across a model reload
    return publisher


def _quality(cfg: Config, stream: Stream) -> Optional[QualityTracker]:
    """A tracker when the stream's targets are among its features (so readings show what
    happened); the promise is the manifest's, for multi-step models."""
    m, q = stream.bundle.manifest, cfg.quality
    if not q.enabled or not set(m.targets) <= set(m.features):
        return None
    rollout = stream.cfg.rollout_steps
    promised = m.accuracy.forecast_mae if m.accuracy is not None and rollout is None else ()
    return QualityTracker(
        rollout or m.horizon,
        [m.features.index(t) for t in m.targets],
        promised,
        samples=q.samples,
        drift_factor=q.drift_factor,
        drift_after_s=q.drift_after_s,
    )


class ModelReloader:
    """Swaps new bundles in between two forecasts, and rolls back updates that fail.

    Main loop only, except :meth:`installed` (the updater's thread). ``swapped()`` is
    called after a bundle was swapped in (its horizon or targets may have changed);
    ``request_reload()`` asks the loop to call :meth:`reload` soon (any thread).
    """

    def __init__(
        self,
        cfg: Config,
        streams: list[Stream],
        outbox: Outbox,
        swapped: Callable[[], None],
        request_reload: Callable[[], None],
    ) -> None:
        self.cfg = cfg
        self.streams = streams
        self._outbox = outbox
        self._swapped = swapped
        self._request_reload = request_reload
        self.updater: Optional[ModelUpdater] = None  #: Set by :meth:`open_updates`.
        #: (stream, sha256) of bundles the updater thread installed, for the loop to try.
        self._updated: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._log = RateLimitedLog(logger)
        for s in streams:
            stat = s.cfg.model.stat()
            s.model_key = (stat.st_mtime_ns, stat.st_size)

    def open_updates(self, link: MqttLink) -> ModelUpdater:
        """Start the model updater's thread; it takes requests from ``link`` and publishes
        its state there. Close it when done."""
        cfg, runtime = self.cfg, self.streams[0].forecaster.runtime
        qos, most = cfg.mqtt.qos, cfg.models.max_bytes
        self.updater = updater = ModelUpdater(
            cfg,
            lambda topic, body: link.publish_later(topic, body, qos, retain=True),
            self.installed,
            check=lambda sc: load_model(sc, runtime, most)[0],  # as at start: all or nothing
        )
        for topic in updater.topics:
            link.subscribe(topic, updater.handle, qos=1, gated=False)
        if cfg.updates.mode == "closed":
            logger.info(
                "model updates are closed: requests on %s are refused; set "
                "updates.public_key (signed bundles) or updates.allow_unsigned = true",
                updater.topics[0],
            )
        return updater

    def installed(self, stream: str, sha256: str) -> None:
        """Updater thread: a bundle is in place; the loop swaps it in, on trial."""
        self._updated.put((stream, sha256))
        self._request_reload()

    def reload(self, only_changed: bool) -> None:
        """Swap in every stream's model file (only those whose file changed, if
        ``only_changed``); a bad one leaves the old running, and one an update just
        installed goes back to ``.previous``."""
        updated: dict[Path, str] = {}  # model file -> sha256 an update just put there
        while not self._updated.empty():
            name, sha = self._updated.get()
            updated.update({s.cfg.model: sha for s in self.streams if s.cfg.name == name})
        for stream in self.streams:
            self._reload(stream, updated, only_changed)
        for stream in self.streams:  # also when the periodic file check swapped it in first
            if updated.get(stream.cfg.model) == stream.bundle.sha256:
                stream.trial = True

    def _reload(self, stream: Stream, updated: dict[Path, str], only_changed: bool) -> None:
        try:
            stat = stream.cfg.model.stat()
        except OSError:
            return  # a file being replaced; the next check sees the new one
        key = (stat.st_mtime_ns, stat.st_size)
        if only_changed and key == stream.model_key:
            return
        stream.model_key = key
        try:
            bundle, forecaster, predict = load_model(
                stream.cfg, stream.forecaster.runtime, self.cfg.models.max_bytes
            )
        except Exception as exc:  # a ModelError, or worse from a hostile bundle: not fatal
            why = str(exc)  # a ModelError names the stream; anything else is worded here
            if not isinstance(exc, ModelError):
                why = f"stream {stream.name}: model {stream.cfg.model}: {type(exc).__name__}: {exc}"
            logger.error("%s; keeping %s", why, stream.bundle.label)
            if stream.cfg.model in updated:
                self._roll_back(stream, updated.pop(stream.cfg.model), f"load failed: {why}")
            return
        if bundle.sha256 != stream.bundle.sha256:
            self._swap(stream, bundle, forecaster, predict)

    def _swap(
        self, stream: Stream, bundle: Bundle, forecaster: Forecaster, predict: Predict
    ) -> None:
        name, old, new = stream.name, stream.bundle.manifest, bundle.manifest
        if new.features != old.features:
            logger.error(
                "stream %s: new model %s wants features %s, not %s; keeping %s "
                "(restart the agent to change features)",
                name,
                bundle.label,
                ", ".join(new.features),
                ", ".join(old.features),
                stream.bundle.label,
            )
            return
        if (new.window, new.period_s, new.computed) != (old.window, old.period_s, old.computed):
            stream.window = build_window(stream.cfg, bundle)
            logger.warning("stream %s: new model's window differs: window emptied", name)
        stream.bundle, stream.forecaster, stream.predict = bundle, forecaster, predict
        equip(stream, self.cfg, self._outbox)
        logger.info("stream %s: model reloaded: now %s", name, bundle.label)
        self._swapped()

    def failed(self, streams: list[Stream], exc: Exception, doing: str) -> None:
        """A model (or its window) raised in use: counted and logged, rate-limited, never
        fatal; one on trial after an update is rolled back."""
        reason = f"{doing} failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        for stream in streams:
            stream.errors += 1
            stream.due = False  # not again each turn: the next period tries again
            self._log.warning(
                f"{stream.name}:error", "stream %s: model %s: %s",
                stream.name, stream.bundle.label, reason,
            )  # fmt: skip
        for stream in streams:
            if stream.trial:
                self._roll_back(stream, stream.bundle.sha256, reason)

    def _roll_back(self, stream: Stream, sha256: str, reason: str) -> None:
        """An update's bundle failed: put ``<model>.previous`` back, reload, report."""
        model, name = stream.cfg.model, stream.name
        for s in self.streams:
            if s.cfg.model == model:
                s.trial = False
        try:
            restored = restore_previous(model)
        except OSError as exc:
            restored = False
            reason += f"; cannot restore {model.name}.previous: {exc.strerror or exc}"
        if not restored:
            logger.error("stream %s: updated model %s failed (%s)", name, sha256[:12], reason)
            return
        logger.error(
            "stream %s: updated model %s failed (%s): rolled back to %s.previous",
            name, sha256[:12], reason, model.name,
        )  # fmt: skip
        self.reload(only_changed=False)
        if self.updater is not None:
            self.updater.rolled_back(name, sha256, reason, stream.bundle.label)
