"""Wiring: sources -> inbox -> pipeline (windows, forecasts) -> outbox -> MQTT, one loop.

One thread, the main loop, owns every window, forecaster and publisher and the MQTT
connection (its reads, writes and reconnects run in the loop's turn), so nothing on the
hot path takes a lock. Sources in other threads (files, commands, stdin) hand reading
batches over the :class:`~sensorcast.agent.sources.inbox.Inbox` and wake the loop.

As with uvicorn's ``Server``, making a :class:`Service` does no I/O: :meth:`Service.start`
loads the models, opens the outbox and the sockets, starts the threads and connects, and
closes what it opened if a step fails; :meth:`Service.run` starts, loops until stopped and
shuts down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from types import FrameType
from typing import Any, Callable, Optional

from sensorcast.agent.config import Config, config_warnings
from sensorcast.agent.config.mqtt import broker_urls
from sensorcast.agent.control.ha_units import unit_problems
from sensorcast.agent.forecast.runtime import Runtime
from sensorcast.agent.pipeline import Pipeline
from sensorcast.agent.publish.link import MqttLink
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.publish.sender import OutboxSender
from sensorcast.agent.publish.topics import Topics
from sensorcast.agent.reloader import ModelReloader
from sensorcast.agent.snapshots import SNAPSHOT_S, WindowStore
from sensorcast.agent.sources.inbox import Inbox
from sensorcast.agent.streams import Stream, attach, load_streams
from sensorcast.agent.telemetry.health import HealthFile, health_path
from sensorcast.agent.telemetry.metrics import start_prometheus
from sensorcast.agent.telemetry.report import Heartbeat, Reporter, log_summary
from sensorcast.agent.telemetry.sdnotify import Notifier
from sensorcast.agent.wakeups import Wakeups

__all__ = ["Service"]

logger = logging.getLogger(__name__)

#: After a turn that took readings the next one waits at most this long, seconds, without
#: working out what falls due when (:meth:`Service.wait_s` costs a little per stream; a
#: loop fed readings is woken by them anyway, and this was the fixed tick before).
BUSY_WAIT_S = 0.1
SUMMARY_S = 300.0  #: How often counters are logged, seconds.
MODEL_CHECK_S = 2.0  #: How often model files are checked for a change, seconds.
SHUTDOWN_FLUSH_S = 3.0  #: How long shutdown waits for the broker to take queued forecasts.


class _Every:
    """Runs ``job()`` from the loop every ``period_s`` seconds, the first time after
    ``first_s`` (default: one period)."""

    def __init__(
        self, period_s: float, job: Callable[[], None], first_s: Optional[float] = None
    ) -> None:
        self.period_s, self.job = period_s, job
        self.next = time.monotonic() + (period_s if first_s is None else first_s)

    def __call__(self, monotonic_now: float) -> None:
        if monotonic_now >= self.next:
            self.job()
            self.next = time.monotonic() + self.period_s


class Service:
    """Runs the agent until SIGTERM/SIGINT (or :meth:`stop`).

    The attributes annotated below are made by :meth:`open` (which :meth:`start` calls).
    """

    inbox: Inbox  #: Reading batches from the sources, the wake socket, load shedding.
    link: MqttLink
    outbox: Outbox
    sender: OutboxSender
    pipeline: Pipeline  #: The hot path: :meth:`Pipeline.ingest`, ``tick``, ``forecast_due``.
    reloader: ModelReloader
    store: WindowStore
    reporter: Reporter
    heartbeat: Heartbeat
    notifier: Notifier
    wakeups: Wakeups  #: How long the loop may wait for its sockets (what the clock brings due).

    def __init__(self, cfg: Config, runtime: Optional[Runtime] = None) -> None:
        self.cfg = cfg
        self.runtime = runtime  #: The interpreter to load models with (None: the first found).
        self.topics = Topics(cfg.mqtt.topic_prefix, cfg.device.id)
        self.streams: list[Stream] = []  #: Loaded by :meth:`start`.
        self._exits = contextlib.ExitStack()  # what start() opened, closed in reverse
        self._jobs: list[_Every] = []
        self._online = False
        self._reload = False
        self._stopping = False
        self._signal = 0
        # Until start() made the inbox, a stop or reload request only sets its flag.
        self._wake: Callable[[], None] = lambda: None
        self._nudge: Callable[[], None] = lambda: None

    def start(self) -> None:
        """Load the models, open the outbox and the sockets, connect, start the threads.

        Raises :class:`~sensorcast.agent.errors.SensorcastError` subclasses with one line
        (bad model, busy metrics port, unreachable broker); whatever was opened by then is
        closed again.
        """
        self.open()
        self._or_close(self._serve)

    def open(self) -> None:
        """The local half of :meth:`start`: load the models, open the inbox and the outbox,
        build the pipeline and the sources (not started). No network, no threads: a
        benchmark or test that drives :attr:`pipeline` itself may call this alone (then
        :meth:`close`). If it fails, what it opened is closed."""
        self._or_close(self._open)

    def _or_close(self, step: Callable[[], None]) -> None:
        try:
            step()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        cfg, exits = self.cfg, self._exits
        for warning in config_warnings(cfg):
            logger.warning("%s", warning)
        self.notifier = exits.enter_context(contextlib.closing(Notifier()))
        self.streams = streams = load_streams(cfg, self.runtime)
        named = [(s.cfg.name, s.bundle.manifest) for s in streams]
        for problem in unit_problems(cfg, named):  # none while discovery is off
            logger.warning("%s (sensorcast check refuses it)", problem)
        self.inbox = inbox = exits.enter_context(contextlib.closing(Inbox()))
        self._wake, self._nudge = inbox.wake, inbox.nudge
        self.link = link = MqttLink(cfg.mqtt, self.topics.status)
        exits.callback(link.close)
        link.wake, link.gate = inbox.wake, inbox.accepting
        self.outbox = outbox = Outbox(
            cfg.state_dir / f"outbox-{cfg.device.id}.db",
            max_messages=cfg.outbox_max_messages,
            max_bytes=cfg.outbox_max_bytes,
            synchronous=cfg.outbox_synchronous,
        )
        exits.callback(outbox.close)
        self.sender = OutboxSender(outbox, link)
        exits.callback(self._final_summary)  # after the sources close, before the outbox
        self.reporter = reporter = Reporter(cfg, link, outbox, self.sender, inbox, streams)
        self.reloader = ModelReloader(
            cfg, streams, outbox, reporter.models_changed, self.request_reload, link
        )
        self.pipeline = Pipeline(
            streams, self.reloader.failed, reporter.quality, cfg.quality.interval_s
        )
        for source in attach(streams, cfg, outbox, link, inbox.hand_over):
            exits.callback(source.close)
        now = time.time()
        for s in streams:  # a fresh detector knows of no open anomaly: say so (retained)
            if s.anomaly is not None and s.publisher is not None:
                s.publisher.publish_anomaly(s.label, s.anomaly.started(now))
        self.store = WindowStore(cfg.state_dir / f"windows-{cfg.device.id}.json", streams)
        self.store.restore()
        health = HealthFile(health_path(cfg.state_dir, cfg.device.id))
        self.heartbeat = Heartbeat(self.notifier, health, link, outbox, streams)
        self.wakeups = Wakeups(streams, link, outbox, self.sender)

    def _serve(self) -> None:
        """Everything outside: model updates, metrics port, broker, source threads."""
        cfg, exits = self.cfg, self._exits
        if cfg.updates.enabled:
            exits.callback(self.reloader.open_updates(self.link).close)
        stop_prometheus = start_prometheus(cfg.metrics, self.reporter.snapshot)
        if stop_prometheus is not None:  # a busy port fails before the broker is tried
            exits.callback(stop_prometheus)
        self.notifier.status(f"connecting to {', '.join(broker_urls(cfg.mqtt))}")
        self.link.connect()
        exits.callback(self.heartbeat.health.remove)  # a stopped agent is not healthy
        for s in self.streams:
            for source in s.sources:
                start = getattr(source, "start", None)
                if callable(start):
                    start()
        self._online = True
        runtime = self.streams[0].forecaster.runtime.name
        scheme = "mqtts" if cfg.mqtt.tls else "mqtt"  # the broker of the list it is on
        self.heartbeat.online(cfg.device.id, f"{scheme}://{self.link.broker}", runtime)
        self._jobs = [
            _Every(MODEL_CHECK_S, lambda: self.reloader.reload(only_changed=True)),
            _Every(SNAPSHOT_S, self.store.save),
            _Every(SUMMARY_S, self._summary),
        ]
        if cfg.metrics.interval_s:
            self._jobs.insert(2, _Every(cfg.metrics.interval_s, self.reporter.publish_metrics, 0))

    def run(self) -> None:
        """Start, then process readings and forecast until stopped, then shut down."""
        self.start()
        try:
            busy = True
            while not self._stopping:
                busy = self.turn(BUSY_WAIT_S if busy else self.wait_s())
                if self._reload:
                    self._reload = False
                    self.reloader.reload(only_changed=False)
                mono = time.monotonic()
                for job in self._jobs:
                    job(mono)
            self._finish()
        finally:
            self.close()

    def wait_s(self) -> float:
        """How long the next turn may wait for the broker or another thread, seconds: until
        the earliest job, heartbeat, period close, dropout check or keepalive falls due
        (:class:`~sensorcast.agent.wakeups.Wakeups`). Readings, MQTT messages, signals and
        requests from other threads wake the loop through its sockets before that."""
        due = self.heartbeat.next_due()
        for job in self._jobs:
            due = min(due, job.next)
        return self.wakeups.wait(due)

    def turn(self, timeout: float) -> bool:
        """One turn of the loop: wait up to ``timeout`` s for the broker or another thread,
        take what came (MQTT messages are parsed and queued in ``link.poll``), close due
        periods, forecast, send, and tell systemd the loop is alive. True if readings (or
        a reload request) came."""
        inbox, pipeline = self.inbox, self.pipeline
        if self.link.poll(0.0 if not inbox.empty() else timeout, inbox.wake_socket):
            inbox.woken()
        took = not inbox.empty()
        now = time.time()
        inbox.drain(pipeline.ingest, now, limit=1000)
        pipeline.tick(now)
        pipeline.forecast_due()
        self.sender.pump()
        self.heartbeat.beat()
        return took

    def _finish(self) -> None:
        """Stopping: take what is queued, forecast, save the windows, send what the broker
        will take within :data:`SHUTDOWN_FLUSH_S`."""
        if self._signal:
            logger.info("signal %d: shutting down", self._signal)
        self.notifier.stopping()
        self.inbox.drain(self.pipeline.ingest, time.time(), limit=None)
        self.pipeline.forecast_due()
        self.store.save()
        for stream in self.streams:
            self.reporter.send_quality(stream)
        if not self.sender.flush(SHUTDOWN_FLUSH_S):
            logger.warning(
                "%d forecasts not yet acknowledged stay in the outbox for the next start",
                self.outbox.depth,
            )

    def close(self) -> None:
        """Close what :meth:`start` opened, in reverse order: the threads and sources
        first (the summary then has their last counts), the outbox, the link (``offline``
        published), the sockets. Safe to call again."""
        self._exits.close()

    def _summary(self) -> None:
        log_summary(self.outbox, self.sender, self.inbox.shed, self.streams)

    def _final_summary(self) -> None:
        if self._online:  # a start that failed says only why
            self._summary()

    def stop(self) -> None:
        """Ask the loop to finish (safe from signal handlers and other threads)."""
        self._stopping = True
        self._wake()

    def request_reload(self) -> None:
        """Reload every stream's model at the next loop turn (safe from a signal handler)."""
        self._reload = True
        self._nudge()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop gracefully; a second one exits at once; SIGHUP reloads."""

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

    def counters(self) -> dict[str, Any]:
        """Per-stream counters (:meth:`Stream.counters`), for logs and tests."""
        return {s.name: s.counters() for s in self.streams}
