"""Wiring: sources -> windows -> forecasters -> publishers, run by one loop.

One thread, the main loop, owns every window, forecaster and publisher and
the MQTT connection (its reads, writes and reconnects run in the loop's turn),
so nothing on the hot path takes a lock. Sources in other threads (files,
commands, stdin) hand reading batches over a queue and wake the loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Optional

import numpy as np

from agent.config import Config, StreamConfig, config_warnings
from agent.errors import ConfigError, ModelError
from agent.forecast import Forecaster, Rollout, check_fits
from agent.health import HealthFile, health_path
from agent.homeassistant import discovery_messages
from agent.logutil import RateLimitedLog
from agent.manifest import DEFAULT_MAX_BUNDLE_BYTES, Bundle, read_bundle
from agent.metrics import LatencyHistogram, serve_prometheus, snapshot
from agent.mqtt import MqttLink
from agent.outbox import Outbox
from agent.publish import ForecastPublisher, OutboxSender, status_topic
from agent.quality import QualityTracker
from agent.runtime import Runtime, load_runtime
from agent.sdnotify import Notifier
from agent.sources import (
    CommandSource,
    FileSource,
    MqttJsonSource,
    MqttValueSource,
    Reading,
    ReadingSink,
    Source,
    StdinSource,
)
from agent.updates import ModelUpdater, restore_previous
from agent.window import MIN_TS, REASONS, Window

__all__ = ["Service", "Stream", "load_streams"]

logger = logging.getLogger(__name__)

TICK_S = 0.1  #: How often the loop checks the clock when no reading arrives.
SUMMARY_S = 300.0  #: How often counters are logged.
MODEL_CHECK_S = 2.0  #: How often model files are checked for a change, seconds.
MAX_QUEUED = 20_000  #: Reading batches waiting for the loop before sources shed load.
SNAPSHOT_S = 60.0  #: How often windows are snapshotted for a warm restart, seconds.
SHUTDOWN_FLUSH_S = 3.0  #: How long shutdown waits for the broker to take queued forecasts.
QUALITY_S = 60.0  #: At most one quality report per stream this often (and one per forecast).
QUALITY_JUDGE_S = 5.0  #: Drift is judged (and reports considered) at most this often.


@dataclass
class Stream:
    """One stream's state, owned by the loop."""

    index: int
    cfg: StreamConfig
    bundle: Bundle
    forecaster: Forecaster
    window: Window
    predict: Callable[[np.ndarray], np.ndarray]  #: Window -> (steps, targets) forecast.
    publisher: Optional[ForecastPublisher] = None
    sources: list[Source] = field(default_factory=list)
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    forecasts: int = 0
    batched: int = 0  #: Forecasts made in a batched call with other streams.
    due: bool = False  #: The window moved and awaits its forecast.
    gaps_seen: int = 0  #: Gaps already reported.
    model_key: tuple[int, int] = (0, 0)  #: The model file's (mtime ns, size) when loaded.
    last_forecast: Optional[float] = None  #: Window end of the latest forecast (Unix s).
    quality: Optional[QualityTracker] = None  #: Forecast vs actual, if targets are features.
    quality_sent: float = 0.0  #: When its quality report was last published (monotonic).
    quality_judged: float = 0.0  #: When drift was last judged (monotonic).
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  #: Per forecast call.
    #: Swapped in by a model update and not yet forecast from: if it fails in use, the
    #: model file goes back to ``.previous``.
    trial: bool = False
    errors: int = 0  #: Exceptions from the model or window, each losing a forecast or reading.


def load_streams(cfg: Config, runtime: Optional[Runtime] = None) -> list[Stream]:
    """Load each stream's bundle, check it fits the stream, and build its window.

    Raises :class:`ModelError` naming the stream and the problem.
    """
    runtime = runtime or load_runtime()
    streams = []
    for i, sc in enumerate(cfg.streams):
        bundle, forecaster, predict = load_model(sc, runtime, cfg.models.max_bytes)
        streams.append(Stream(i, sc, bundle, forecaster, _window(sc, bundle), predict))
    return streams


def load_model(
    sc: StreamConfig, runtime: Runtime, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
) -> tuple[Bundle, Forecaster, Callable[[np.ndarray], np.ndarray]]:
    """Read a stream's bundle (at most ``max_bytes``), check it fits, make its forecaster."""
    try:
        bundle = read_bundle(sc.model, max_bytes)
        check_fits(bundle, sc.features, sc.name)
        _check_inputs(sc, bundle.manifest.features)
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


def _window(sc: StreamConfig, bundle: Bundle) -> Window:
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
    )


def _check_inputs(sc: StreamConfig, features: tuple[str, ...]) -> None:
    """Every model feature needs a source, and every per-feature input a model feature."""
    for source in sc.sources:
        if source.feature is not None and source.feature not in features:
            raise ModelError(
                f"stream {sc.name}: {source.where} names feature {source.feature!r}, but the "
                f"model's features are {', '.join(features)}"
            )
    if sc.input_topic is not None or any(s.feature is None for s in sc.sources):
        return  # a whole-stream source may carry every feature
    missing = [f for f in features if f not in {s.feature for s in sc.sources}]
    if missing:
        raise ModelError(
            f"stream {sc.name}: no source for feature {', '.join(missing)}; add "
            f"[streams.inputs.{missing[0]}] or an input_topic"
        )


def build_sources(stream: Stream, link: MqttLink, sink: ReadingSink) -> list[Source]:
    """Make the stream's sources; MQTT ones are subscribed on ``link``."""
    sc, features = stream.cfg, stream.bundle.manifest.features
    i, name = stream.index, sc.name
    out: list[Source] = []
    if sc.input_topic is not None:
        json_source = MqttJsonSource(i, name, features, sc.input_topic, sink)
        link.subscribe(sc.input_topic, json_source.handle, qos=1)
        out.append(json_source)
    for cfg in sc.sources:
        index = features.index(cfg.feature) if cfg.feature is not None else None
        source: Source
        if cfg.type == "mqtt":
            assert cfg.topic is not None
            source = MqttJsonSource(i, name, features, cfg.topic, sink)
            link.subscribe(cfg.topic, source.handle, qos=1)
        elif cfg.type == "mqtt_value":
            assert cfg.topic is not None and index is not None
            source = MqttValueSource(i, name, features, index, cfg.topic, sink)
            link.subscribe(cfg.topic, source.handle, qos=1)
        elif cfg.type == "file":
            assert cfg.path is not None and index is not None
            source = FileSource(
                i, name, features, index, str(cfg.path), sink,
                interval_s=cfg.interval_s, parser=cfg.parser, scale=cfg.scale,
                offset=cfg.offset, max_backoff_s=cfg.max_backoff_s,
            )  # fmt: skip
        elif cfg.type == "command":
            source = CommandSource(
                i, name, features, index, cfg.command, sink,
                interval_s=cfg.interval_s, timeout_s=cfg.timeout_s, format=cfg.format,
                max_backoff_s=cfg.max_backoff_s,
                # the broker password stays out of the command's environment
                secrets=[p for p in (link.cfg.password,) if p is not None],
                secret_env=[e for e in (link.cfg.password_env,) if e is not None],
            )  # fmt: skip
        else:
            source = StdinSource(i, name, features, sink)
        out.append(source)
    return out


class Service:
    """Runs the agent until SIGTERM/SIGINT (or :meth:`stop`)."""

    def __init__(self, cfg: Config, runtime: Optional[Runtime] = None) -> None:
        self.cfg = cfg
        self.streams = load_streams(cfg, runtime)
        self._queue: queue.SimpleQueue[list[Reading]] = queue.SimpleQueue()
        self.shed = 0  #: Reading batches dropped because the loop was behind (a flood).
        prefix, device = cfg.mqtt.topic_prefix, cfg.device.id
        self.link = MqttLink(cfg.mqtt, status_topic(prefix, device))
        # Other threads (sources, model updates, signal handlers) wake the loop's select.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._loop_thread = threading.get_ident()
        self.link.wake = self._wake
        self.outbox = Outbox(
            cfg.state_dir / f"outbox-{device}.db",
            max_messages=cfg.outbox_max_messages,
            max_bytes=cfg.outbox_max_bytes,
            synchronous=cfg.outbox_synchronous,
        )
        self.sender = OutboxSender(self.outbox, self.link)
        self.link.gate = self._accepting
        self.link.on_connected.append(self._publish_discovery)
        self.updater: Optional[ModelUpdater] = None
        #: (stream, sha256) of bundles the updater thread installed, for the loop to try.
        self._updated: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        if cfg.updates.enabled:
            rt, most = self.streams[0].forecaster.runtime, cfg.models.max_bytes
            self.updater = ModelUpdater(
                cfg,
                lambda topic, body: self.link.publish_later(topic, body, cfg.mqtt.qos, retain=True),
                self._update_installed,
                check=lambda sc: load_model(sc, rt, most)[0],  # as at start: all or nothing
            )
            for topic in self.updater.topics:
                self.link.subscribe(topic, self.updater.handle, qos=1, gated=False)
            if cfg.updates.mode == "closed":
                logger.info(
                    "model updates are closed: requests on %s are refused; set "
                    "updates.public_key (signed bundles) or updates.allow_unsigned = true",
                    self.updater.topics[0],
                )
        for warning in config_warnings(cfg):
            logger.warning("%s", warning)
        ha = cfg.homeassistant
        if ha.enabled:
            self.link.subscribe(ha.status_topic, self._homeassistant_status, qos=1, gated=False)
        for s in self.streams:
            s.publisher = self._publisher(s)
            s.quality = self._quality(s)
            s.sources = build_sources(s, self.link, self._hand_over)
        if sum(src.type_name == "stdin" for s in self.streams for src in s.sources) > 1:
            raise ConfigError("only one stream can read stdin ([[streams.sources]] type = 'stdin')")
        self._snapshot_path = cfg.state_dir / f"windows-{device}.json"
        self._restore_windows()
        for s in self.streams:
            stat = s.cfg.model.stat()
            s.model_key = (stat.st_mtime_ns, stat.st_size)
        self._reload = False
        self._stopping = False
        self._signal = 0
        self._log = RateLimitedLog(logger)
        self._metrics_s = cfg.metrics.interval_s
        self._prometheus: Any = None
        self.notifier = Notifier()
        self.health = HealthFile(health_path(cfg.state_dir, device))
        # Test hook: while this file exists the loop stands still (watchdog tests).
        self._stall_file = os.environ.get("SENSORCAST_TEST_STALL_FILE")

    def _restore_windows(self) -> None:
        """Warm restart: reload the windows saved at the last shutdown (or snapshot)."""
        try:
            saved = json.loads(self._snapshot_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.warning("window snapshot %s ignored: unreadable (%s)", self._snapshot_path, exc)
            return
        now = time.time()
        streams = saved.get("streams", {}) if isinstance(saved, dict) else {}
        for stream in self.streams:
            entry = streams.get(stream.cfg.name)
            if not isinstance(entry, dict):
                continue
            name = stream.cfg.name
            if entry.get("model") != stream.bundle.sha256:
                logger.info("stream %s: window snapshot ignored: it is from another model", name)
                continue
            age = now - float(entry.get("saved_at", 0))
            if not 0 <= age <= stream.window.max_gap_s:
                logger.info(
                    "stream %s: window snapshot ignored: %.0f s old, more than max_gap_s", name, age
                )
                continue
            try:
                stream.window.restore(entry["window"])
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("stream %s: window snapshot ignored: %s", name, exc)
                continue
            logger.info(
                "stream %s: warm restart with %d of %d rows",
                name,
                stream.window.filled,
                stream.window.length,
            )

    def save_windows(self) -> None:
        """Snapshot every window to the state directory (atomically)."""
        data = {
            "saved_at": time.time(),
            "streams": {
                s.cfg.name: {
                    "model": s.bundle.sha256,
                    "saved_at": time.time(),
                    "window": s.window.snapshot(),
                }
                for s in self.streams
            },
        }
        tmp = self._snapshot_path.with_suffix(".tmp")
        try:
            self._snapshot_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._snapshot_path)
        except OSError as exc:
            self._log.warning("snapshot", "cannot save window snapshot: %s", exc)

    def _quality(self, s: Stream) -> Optional[QualityTracker]:
        """A tracker when the stream's targets are among its features (so readings show
        what happened); the promise is the manifest's, for multi-step models."""
        m, q = s.bundle.manifest, self.cfg.quality
        if not q.enabled or not set(m.targets) <= set(m.features):
            return None
        rollout = s.cfg.rollout_steps
        promised = m.accuracy.forecast_mae if m.accuracy is not None and rollout is None else ()
        return QualityTracker(
            rollout or m.horizon,
            [m.features.index(t) for t in m.targets],
            promised,
            samples=q.samples,
            drift_factor=q.drift_factor,
            drift_after_s=q.drift_after_s,
        )

    def _track_quality(self, stream: Stream, values: np.ndarray) -> None:
        """Residuals for earlier forecasts from the period just closed; report, judge drift."""
        tracker, window = stream.quality, stream.window
        if tracker is None or window.closed_through is None:
            return
        slot = window.closed_through
        tracker.actual(slot, window.view()[-1])
        tracker.forecast(slot, values)
        mono = time.monotonic()
        if mono - stream.quality_judged < QUALITY_JUDGE_S:
            return  # drift is a matter of hours: judging it costs more than a forecast
        stream.quality_judged = mono
        now = time.time()
        change = tracker.update_drift(now)
        name = stream.cfg.name
        if change == "start":
            logger.warning(
                "stream %s: forecast error has stayed above %g x what model %s promised for "
                "%.0f s: drift; the model may need retraining",
                name,
                tracker.drift_factor,
                stream.bundle.label,
                tracker.drift_after_s,
            )
        elif change == "end":
            logger.info("stream %s: forecast error back within the model's promise", name)
        if time.monotonic() - stream.quality_sent >= QUALITY_S or change is not None:
            self._send_quality(stream)

    def _send_quality(self, stream: Stream) -> None:
        """Publish the stream's quality report (retained) on ``.../<stream>/quality``."""
        if stream.quality is None or not self.link.connected:
            return
        stream.quality_sent = time.monotonic()
        body = stream.quality.report(stream.cfg.name, stream.bundle.label, time.time())
        topic = f"{self.cfg.mqtt.topic_prefix}/{self.cfg.device.id}/{stream.cfg.name}/quality"
        self.link.publish(topic, json.dumps(body).encode(), qos=self.cfg.mqtt.qos, retain=True)

    def _start_prometheus(self) -> None:
        m = self.cfg.metrics
        if not m.prometheus_port:
            return
        try:
            self._prometheus = serve_prometheus(
                lambda: snapshot(self), m.prometheus_address, m.prometheus_port
            )
        except OSError as exc:
            raise ConfigError(
                f"metrics.prometheus_port {m.prometheus_port} on {m.prometheus_address}: "
                f"{exc.strerror or exc}; pick a free port"
            ) from exc
        except ImportError as exc:
            raise ConfigError(str(exc)) from exc

    def _publish_metrics(self) -> None:
        """The counters as JSON on ``<prefix>/<device>/metrics`` (retained)."""
        if not self.link.connected:
            return
        topic = f"{self.cfg.mqtt.topic_prefix}/{self.cfg.device.id}/metrics"
        self.link.publish(topic, json.dumps(snapshot(self)).encode(), qos=0, retain=True)

    def _publish_discovery(self) -> None:
        """Home Assistant discovery configs, retained (after each connect, and on request)."""
        streams = [(s.cfg.name, s.bundle.manifest) for s in self.streams]
        for topic, payload in discovery_messages(self.cfg, streams, self.link.status_topic):
            self.link.publish(topic, payload, qos=1, retain=True)

    def _homeassistant_status(self, payload: bytes, _arrived: float) -> None:
        """Home Assistant (re)started: it wants discovery and availability again."""
        if payload.strip() == b"online" and self.link.connected:
            logger.info("Home Assistant is online: publishing discovery")
            self._publish_discovery()
            self.link.publish(self.link.status_topic, b"online", qos=self.cfg.mqtt.qos, retain=True)

    def _accepting(self) -> bool:
        """MQTT messages' gate: shed before parsing when the loop is behind."""
        if self._queue.qsize() >= MAX_QUEUED:
            self.shed += 1
            return False
        return True

    def _hand_over(self, batch: list[Reading]) -> None:
        """Sources' sink (their threads): queue a batch, or shed it when the loop is behind.

        Bounds memory under a flood; what is shed is counted and logged.
        """
        if self._queue.qsize() >= MAX_QUEUED:
            self.shed += 1
            return
        self._queue.put(batch)
        if threading.get_ident() != self._loop_thread:
            self._wake()

    def _wake(self) -> None:
        """Make the loop's wait return (any thread, and signal handlers)."""
        # Full: the loop wakes anyway. Closed: shutting down.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _publisher(self, s: Stream) -> ForecastPublisher:
        cfg, m = self.cfg, s.bundle.manifest
        publisher = ForecastPublisher(
            self.outbox,
            cfg.device.id,
            s.cfg.name,
            cfg.mqtt.topic_prefix,
            cfg.mqtt.qos,
            m.targets,
            m.period_s,
            retain=cfg.mqtt.retain if s.cfg.retain is None else s.cfg.retain,
        )
        if s.publisher is not None:
            publisher.seq = s.publisher.seq  # seq goes on across a model reload
        return publisher

    def request_reload(self) -> None:
        """Reload every stream's model at the next loop turn (safe from a signal handler)."""
        self._reload = True
        self._queue.put([])
        self._wake()

    def _update_installed(self, stream: str, sha256: str) -> None:
        """Updater thread: a bundle is in place; the loop swaps it in, on trial."""
        self._updated.put((stream, sha256))
        self.request_reload()

    def _reload_models(self, only_changed: bool) -> None:
        """Swap in new bundles between two forecasts; a bad one leaves the old running, and
        one an update just installed goes back to ``.previous``."""
        updated: dict[Path, str] = {}  # model file -> sha256 an update just put there
        while not self._updated.empty():
            name, sha = self._updated.get()
            updated.update({s.cfg.model: sha for s in self.streams if s.cfg.name == name})
        for stream in self.streams:
            name = stream.cfg.name
            try:
                stat = stream.cfg.model.stat()
            except OSError:
                continue  # a file being replaced; the next check sees the new one
            key = (stat.st_mtime_ns, stat.st_size)
            if only_changed and key == stream.model_key:
                continue
            stream.model_key = key
            try:
                bundle, forecaster, predict = load_model(
                    stream.cfg, stream.forecaster.runtime, self.cfg.models.max_bytes
                )
            except Exception as exc:  # a ModelError, or worse from a hostile bundle: not fatal
                why = str(exc)  # a ModelError names the stream; anything else is worded here
                if not isinstance(exc, ModelError):
                    why = f"stream {name}: model {stream.cfg.model}: {type(exc).__name__}: {exc}"
                logger.error("%s; keeping %s", why, stream.bundle.label)
                if stream.cfg.model in updated:
                    self._roll_back(stream, updated.pop(stream.cfg.model), f"load failed: {why}")
                continue
            if bundle.sha256 == stream.bundle.sha256:
                continue
            old, new = stream.bundle.manifest, bundle.manifest
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
                continue
            if (new.window, new.period_s) != (old.window, old.period_s):
                stream.window = _window(stream.cfg, bundle)
                logger.warning(
                    "stream %s: new model has another window or period: window emptied", name
                )
            stream.bundle, stream.forecaster, stream.predict = bundle, forecaster, predict
            stream.publisher = self._publisher(stream)
            stream.quality = self._quality(stream)  # a new model makes its own promise
            logger.info("stream %s: model reloaded: now %s", name, bundle.label)
            if self.link.connected:
                self._publish_discovery()  # the horizon or targets may have changed
        for stream in self.streams:  # also when the periodic file check swapped it in first
            if updated.get(stream.cfg.model) == stream.bundle.sha256:
                stream.trial = True

    def _model_failed(self, streams: list[Stream], exc: Exception, doing: str) -> None:
        """A model (or its window) raised in use: counted and logged, rate-limited, never
        fatal; one on trial after an update is rolled back."""
        reason = f"{doing} failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        for stream in streams:
            stream.errors += 1
            stream.due = False  # not again each turn: the next period tries again
            self._log.warning(
                f"{stream.cfg.name}:error", "stream %s: model %s: %s",
                stream.cfg.name, stream.bundle.label, reason,
            )  # fmt: skip
        for stream in streams:
            if stream.trial:
                self._roll_back(stream, stream.bundle.sha256, reason)

    def _roll_back(self, stream: Stream, sha256: str, reason: str) -> None:
        """An update's bundle failed: put ``<model>.previous`` back, reload, report."""
        model, name = stream.cfg.model, stream.cfg.name
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
        self._reload_models(only_changed=False)
        if self.updater is not None:
            self.updater.rolled_back(name, sha256, reason, stream.bundle.label)

    def stop(self) -> None:
        """Ask the loop to finish (safe from signal handlers and other threads)."""
        self._stopping = True
        self._wake()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop gracefully; a second one exits at once."""

        def handle(signum: int, _frame: Optional[FrameType]) -> None:
            # No logging or other I/O here: the main thread may be inside a write to
            # stderr, and a reentrant write raises out of this handler.
            if self._stopping:
                os._exit(128 + signum)
            self._signal = signum
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda _s, _f: self.request_reload())

    def run(self) -> None:
        """Connect, then process readings and forecast until stopped."""
        self._loop_thread = threading.get_ident()  # MQTT handlers run here: no wake needed
        self._start_prometheus()  # a busy port fails before anything else starts
        self.notifier.status(f"connecting to {self.cfg.mqtt.url}")
        try:
            self.link.connect()
        except BaseException:
            if self._prometheus is not None:
                self._prometheus[0].shutdown()
            raise
        for s in self.streams:
            for source in s.sources:
                start = getattr(source, "start", None)
                if callable(start):
                    start()
        names = ", ".join(f"{s.cfg.name} ({s.bundle.label})" for s in self.streams)
        self.notifier.ready(f"online on {self.cfg.mqtt.url}; streams: {names}")
        logger.info(
            "online as %s on %s; streams: %s; runtime %s",
            self.cfg.device.id,
            self.cfg.mqtt.url,
            names,
            self.streams[0].forecaster.runtime.name,
        )
        next_summary = time.monotonic() + SUMMARY_S
        next_snapshot = time.monotonic() + SNAPSHOT_S
        next_model_check = time.monotonic() + MODEL_CHECK_S
        next_metrics = time.monotonic()
        try:
            while not self._stopping:
                self.turn(TICK_S)
                if self._reload:
                    self._reload = False
                    self._reload_models(only_changed=False)
                if time.monotonic() >= next_model_check:
                    self._reload_models(only_changed=True)
                    next_model_check = time.monotonic() + MODEL_CHECK_S
                if time.monotonic() >= next_snapshot:
                    self.save_windows()
                    next_snapshot = time.monotonic() + SNAPSHOT_S
                if self._metrics_s and time.monotonic() >= next_metrics:
                    self._publish_metrics()
                    next_metrics = time.monotonic() + self._metrics_s
                if time.monotonic() >= next_summary:
                    self.log_summary()
                    next_summary = time.monotonic() + SUMMARY_S
            if self._signal:
                logger.info("signal %d: shutting down", self._signal)
            self.notifier.stopping()
            self._drain(time.time(), limit=None)
            self._forecast_due()
            self.save_windows()
            for stream in self.streams:
                self._send_quality(stream)
            if not self.sender.flush(SHUTDOWN_FLUSH_S):
                logger.warning(
                    "%d forecasts not yet acknowledged stay in the outbox for the next start",
                    self.outbox.depth,
                )
        finally:
            for s in self.streams:
                for source in s.sources:
                    source.close()
            self.log_summary()
            self.outbox.close()
            self.link.close()
            self.health.remove()
            self.notifier.close()
            if self.updater is not None:
                self.updater.close()
            self._wake_r.close()
            self._wake_w.close()
            if self._prometheus is not None:
                self._prometheus[0].shutdown()

    def turn(self, timeout: float) -> None:
        """One turn of the loop: wait up to ``timeout`` s for the broker or another thread,
        take what came (MQTT messages are parsed and queued in ``link.poll``), close due
        periods, forecast, send, and tell systemd the loop is alive."""
        if self.link.poll(0.0 if not self._queue.empty() else timeout, self._wake_r):
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass  # drained
        now = time.time()
        self._drain(now, limit=1000)
        self._tick(now)
        self._forecast_due()
        self.sender.pump()
        self._heartbeat()

    def _heartbeat(self) -> None:
        """One loop turn done: ping systemd's watchdog, refresh the health file and status."""
        while self._stall_file is not None and os.path.exists(self._stall_file):
            time.sleep(0.05)  # test hook only: a stuck loop
        mono = time.monotonic()
        self.notifier.progress(mono)
        if not self.health.due(mono):
            return
        forecasts = sum(s.forecasts for s in self.streams)
        box = self.outbox
        self.health.write(
            {
                "connected": self.link.connected,
                "disconnected_since": self.link.disconnected_since,
                "streams": len(self.streams),
                "forecasts": forecasts,
                "outbox_depth": box.depth,
                "degraded": box.degraded,
                "last_forecast": {s.cfg.name: s.last_forecast for s in self.streams},
            },
            mono,
        )
        if self.health.error is not None:
            self._log.warning("health", "cannot write health file: %s", self.health.error)
        status = f"{len(self.streams)} streams, {forecasts} forecasts, outbox {box.depth}"
        if not self.link.connected:
            status += "; broker unreachable, queueing"
        if box.degraded:
            status += "; durability degraded"
        self.notifier.status(status)

    def _drain(self, now: float, limit: Optional[int]) -> None:
        count = 0
        while limit is None or count < limit:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                return
            self._ingest(batch, now)
            count += 1

    def _ingest(self, batch: list[Reading], now: float) -> None:
        for reading in batch:
            stream = self.streams[reading.stream]
            try:
                if stream.due and stream.window.appends_before(reading.ts):
                    self._forecast(stream)  # this window's forecast cannot wait for a batch
                result = stream.window.add(reading.feature, reading.ts, reading.value, now)
            except Exception as exc:  # a window made from a bad manifest: the reading is lost
                self._model_failed([stream], exc, "adding a reading")
                continue
            if result < 0:
                reason = REASONS[result]
                stream.rejected[reason] = stream.rejected.get(reason, 0) + 1
                self._log.warning(
                    f"{stream.cfg.name}:{reason}",
                    "stream %s: rejected a %s reading (%s)",
                    stream.cfg.name,
                    stream.bundle.manifest.features[reading.feature],
                    reason,
                )
                continue
            stream.accepted += 1
            if stream.window.gaps != stream.gaps_seen:
                stream.gaps_seen = stream.window.gaps
                self._log.warning(
                    f"{stream.cfg.name}:gap",
                    "stream %s: no reading for longer than max_gap_s; window emptied, "
                    "forecasts resume when it is full again",
                    stream.cfg.name,
                )
            if result and stream.window.ready:
                stream.due = True

    def _tick(self, now: float) -> None:
        for stream in self.streams:
            if not stream.window.closing_due(now):
                continue
            if stream.due:
                self._forecast(stream)  # the window is about to move: forecast it first
            if stream.window.close_due(now) and stream.window.ready:
                stream.due = True

    def _forecast_due(self) -> None:
        """Forecast every stream whose window moved; streams sharing a batched model
        go in one call."""
        groups: dict[str, list[Stream]] = {}
        for stream in self.streams:
            if not stream.due:
                continue
            if stream.forecaster.batch_size > 1 and stream.cfg.rollout_steps is None:
                groups.setdefault(stream.bundle.sha256, []).append(stream)
            else:
                self._forecast(stream)
        for group in groups.values():
            if len(group) == 1:
                self._forecast(group[0])
                continue
            started = time.perf_counter()
            try:
                values = group[0].forecaster.predict_batch([s.window.view() for s in group])
            except Exception as exc:  # see _forecast
                self._model_failed(group, exc, "batched forecast")
                continue
            each = (time.perf_counter() - started) / len(group)
            for stream, forecast in zip(group, values):
                stream.latency.observe(each)
                self._publish(stream, forecast)
                stream.batched += 1

    def _forecast(self, stream: Stream) -> None:
        started = time.perf_counter()
        try:
            values = stream.predict(stream.window.view())
        except Exception as exc:  # one stream's broken model must not stop the agent
            self._model_failed([stream], exc, "forecast")
            return
        stream.latency.observe(time.perf_counter() - started)
        self._publish(stream, values)

    def _publish(self, stream: Stream, values: np.ndarray) -> None:
        window = stream.window
        assert window.closed_through is not None and stream.publisher is not None
        window_end = window.closed_through * window.period_s
        stream.publisher.publish(stream.bundle.label, window_end, values)
        self._track_quality(stream, values)
        stream.forecasts += 1
        stream.last_forecast = window_end
        stream.due = False
        stream.trial = False  # it forecast: the update stays

    def counters(self) -> dict[str, Any]:
        """Per-stream counters, for logs and tests."""
        out: dict[str, Any] = {}
        for s in self.streams:
            rejected = dict(s.rejected)
            for source in s.sources:
                for reason, n in list(source.rejected.items()):
                    rejected[reason] = rejected.get(reason, 0) + n
            out[s.cfg.name] = {
                "accepted": s.accepted,
                "rejected": rejected,
                "forecasts": s.forecasts,
                "batched": s.batched,
                "gaps": s.window.gaps,
                "errors": s.errors,
            }
        return out

    def log_summary(self) -> None:
        """Log the counters at info level."""
        box = self.outbox
        if self.shed:
            logger.warning(
                "load shed: %d reading batches (or MQTT messages) dropped: the loop was behind",
                self.shed,
            )
        logger.info(
            "outbox: %d queued (%d bytes, at most %d), %d sent, %d dropped when full, "
            "%d refused by the broker%s",
            box.depth,
            box.size_bytes,
            box.high_water,
            self.sender.sent,
            box.dropped,
            self.sender.refused,
            f"; durability degraded: {box.degraded}" if box.degraded else "",
        )
        for name, c in self.counters().items():
            logger.info(
                "stream %s: %d readings accepted, rejected %s, %d forecasts (%d batched), %d gaps",
                name,
                c["accepted"],
                c["rejected"] or "none",
                c["forecasts"],
                c["batched"],
                c["gaps"],
            )
