"""What the running agent says about itself, besides its forecasts.

Over MQTT (:class:`Reporter`): each stream's forecast quality, the metrics snapshot, and
Home Assistant's discovery configs, all retained. To systemd and the health file
(:class:`Heartbeat`): a sign of life from the loop's turns, which wake for it when
nothing else does (:meth:`Heartbeat.next_due`). In the log (:func:`log_summary`):
the counters, every few minutes and at shutdown.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Optional

from sensorcast.agent.config import Config
from sensorcast.agent.control.homeassistant import discovery_messages, expire_after_s
from sensorcast.agent.logutil import RateLimitedLog, iso_utc
from sensorcast.agent.publish.link import MqttLink
from sensorcast.agent.publish.mqtt5 import Stamps
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.publish.sender import OutboxSender
from sensorcast.agent.publish.topics import Topics
from sensorcast.agent.sources.inbox import Inbox
from sensorcast.agent.telemetry.health import HealthFile
from sensorcast.agent.telemetry.metrics import snapshot
from sensorcast.agent.telemetry.sdnotify import Notifier
from sensorcast.agent.telemetry.stats import StreamView

__all__ = ["SNAPSHOT_WAIT_S", "Heartbeat", "Reporter", "log_summary"]

logger = logging.getLogger(__name__)

SNAPSHOT_WAIT_S = 2.0  #: Longest a scrape waits for the loop to make a snapshot, seconds.


class Reporter:
    """Publishes the agent's reports on its MQTT link (main loop only): Home Assistant's
    discovery after each connect (and when Home Assistant comes online), the rest when
    asked."""

    def __init__(
        self,
        cfg: Config,
        link: MqttLink,
        outbox: Outbox,
        sender: OutboxSender,
        inbox: Inbox,
        streams: Sequence[StreamView],
    ) -> None:
        self.cfg = cfg
        self.started = time.time()  #: When the agent started (its metrics' ``started``).
        self.topics = Topics(cfg.mqtt.topic_prefix, cfg.device.id)
        self.link = link
        self.outbox = outbox
        self.sender = sender
        self.inbox = inbox
        self.streams = streams
        self._by_name = {s.name: s for s in streams}  # the streams are fixed; models are not
        self._owner = threading.get_ident()  # the loop's thread
        self._last_snapshot: Optional[dict[str, Any]] = None
        # MQTT 5 properties of everything published; a forecast's expiry is the staleness
        # limit Home Assistant is told (both from the stream's period)
        link.stamps = Stamps(self.topics, self.staleness_s, cfg.mqtt.protocol == "5")
        link.on_connected.append(self.publish_discovery)
        if cfg.homeassistant.enabled:
            topic = cfg.homeassistant.status_topic
            link.subscribe(topic, self.homeassistant_status, qos=1, gated=False)

    def staleness_s(self, stream: str) -> Optional[int]:
        """How long a forecast of ``stream`` counts as current, seconds (Home Assistant's
        ``expire_after``, from the running bundle's period); None for no such stream."""
        view = self._by_name.get(stream)  # a dict: called for every forecast published
        return None if view is None else expire_after_s(view.manifest.period_s)

    def snapshot(self) -> dict[str, Any]:
        """The metrics snapshot (:func:`~sensorcast.agent.telemetry.metrics.snapshot`); safe
        from any thread (a Prometheus scrape)."""
        if threading.get_ident() == self._owner:
            return self._snapshot()
        # Reading the streams' quality refreshes their scores: only the loop may. It makes
        # the snapshot at its next turn; a loop that does not answer in time (stalled, or not
        # running yet) gets the last one it made, which says how old it is ("time").
        made: list[dict[str, Any]] = []
        done = threading.Event()

        def make() -> None:
            made.append(self._snapshot())
            done.set()

        self.link.call_soon(make)
        if done.wait(SNAPSHOT_WAIT_S):
            return made[0]
        last = self._last_snapshot
        return last if last is not None else self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        self._last_snapshot = snapshot(
            self.cfg.device.id,
            self.link,
            self.inbox.shed,
            self.outbox,
            self.sender,
            self.streams,
            site=self.cfg.device.site,
        )
        self._last_snapshot["started"] = self.started
        return self._last_snapshot

    def quality_body(self, stream: StreamView) -> Optional[dict[str, Any]]:
        """The quality message of ``stream`` (None without a quality tracker): the tracker's
        report, and what the stream does about it now (``fallback``: the baseline published
        in the model's place, ``anomaly``: one is open, ``anomalies``: started since the
        start, ``shadow``: the shadow model's report)."""
        if stream.quality is None:
            return None
        now = time.time()
        body = stream.quality.report(stream.name, stream.label, now)
        body["time_iso"] = iso_utc(now)
        body["fallback"] = stream.cfg.fallback if stream.fallback_active else None
        body["anomaly"] = stream.anomaly is not None and stream.anomaly.active
        body["anomalies"] = stream.anomalies
        body["shadow"] = stream.shadow.report() if stream.shadow is not None else None
        return body

    def publish_metrics(self) -> None:
        """The snapshot as JSON on ``<prefix>/<device>/metrics`` (retained)."""
        if not self.link.connected:
            return
        body = json.dumps(self.snapshot()).encode()
        self.link.publish(self.topics.metrics, body, qos=0, retain=True)

    def quality(self, stream: StreamView, now: bool = False) -> None:
        """Publish the stream's quality report if ``quality.interval_s`` passed since the
        last, or at once if ``now`` (its drift began or ended)."""
        if now or time.monotonic() - stream.quality_sent >= self.cfg.quality.interval_s:
            self.send_quality(stream)

    def send_quality(self, stream: StreamView) -> None:
        """Publish the stream's quality report (retained) on ``.../<stream>/quality``."""
        if stream.quality is None or not self.link.connected:
            return
        stream.quality_sent = time.monotonic()
        body = self.quality_body(stream)
        topic = self.topics.quality(stream.name)
        self.link.publish(topic, json.dumps(body).encode(), qos=self.cfg.mqtt.qos, retain=True)

    def publish_discovery(self) -> None:
        """Home Assistant discovery configs, retained (after each connect, and on request)."""
        streams = [(s.name, s.manifest) for s in self.streams]
        for topic, payload in discovery_messages(self.cfg, streams, self.link.status_topic):
            self.link.publish(topic, payload, qos=1, retain=True)

    def models_changed(self) -> None:
        """A stream's model was swapped: its horizon or targets may have changed."""
        if self.link.connected:
            self.publish_discovery()

    def homeassistant_status(self, payload: bytes, _arrived: float) -> None:
        """Home Assistant (re)started: it wants discovery and availability again."""
        if payload.strip() == b"online" and self.link.connected:
            logger.info("Home Assistant is online: publishing discovery")
            self.publish_discovery()
            self.link.publish(self.link.status_topic, b"online", qos=self.cfg.mqtt.qos, retain=True)


class Heartbeat:
    """One loop turn done: ping systemd's watchdog, refresh the health file and the status
    line (``systemctl status``)."""

    def __init__(
        self,
        notifier: Notifier,
        health: HealthFile,
        link: MqttLink,
        outbox: Outbox,
        streams: Sequence[StreamView],
    ) -> None:
        self.notifier = notifier
        self.health = health
        self.link = link
        self.outbox = outbox
        self.streams = streams
        self._log = RateLimitedLog(logger)
        # Test hook: while this file exists the loop stands still (watchdog tests).
        self._stall_file = os.environ.get("SENSORCAST_TEST_STALL_FILE")

    def online(self, device: str, url: str, runtime: str) -> None:
        """Connected to ``url``, sources started: tell systemd (``READY=1``) and the log."""
        names = ", ".join(f"{s.name} ({s.label})" for s in self.streams)
        self.notifier.ready(f"online on {url}; streams: {names}")
        logger.info("online as %s on %s; streams: %s; runtime %s", device, url, names, runtime)

    def next_due(self) -> float:
        """Monotonic time by which the loop must turn again for :meth:`beat`: the
        watchdog's next ping or the health file's next write, whichever is first."""
        return min(self.notifier.next_due(), self.health.next_due())

    def beat(self) -> None:
        """Called once per loop turn; writes the health file every few seconds."""
        while self._stall_file is not None and os.path.exists(self._stall_file):
            time.sleep(0.05)  # test hook only: a stuck loop
        mono = time.monotonic()
        self.notifier.progress(mono)
        if not self.health.due(mono):
            return
        forecasts = sum(s.forecasts for s in self.streams)
        box, link = self.outbox, self.link
        self.health.write(
            {
                "connected": link.connected,
                "disconnected_since": link.disconnected_since,
                "streams": len(self.streams),
                "forecasts": forecasts,
                "outbox_depth": box.depth,
                "degraded": box.degraded,
                "last_forecast": {s.name: s.last_forecast for s in self.streams},
            },
            mono,
        )
        if self.health.error is not None:
            self._log.warning("health", "cannot write health file: %s", self.health.error)
        status = f"{len(self.streams)} streams, {forecasts} forecasts, outbox {box.depth}"
        if not link.connected:
            status += "; broker unreachable, queueing"
        if box.degraded:
            status += "; durability degraded"
        self.notifier.status(status)


def log_summary(
    outbox: Outbox, sender: OutboxSender, shed: int, streams: Sequence[StreamView]
) -> None:
    """Log the counters at info level (load shedding, if any, as a warning)."""
    if shed:
        logger.warning(
            "load shed: %d reading batches (or MQTT messages) dropped: the loop was behind", shed
        )
    logger.info(
        "outbox: %d queued (%d bytes, at most %d), %d sent, %d dropped when full, "
        "%d refused by the broker%s",
        outbox.depth,
        outbox.size_bytes,
        outbox.high_water,
        sender.sent,
        outbox.dropped,
        sender.refused,
        f"; durability degraded: {outbox.degraded}" if outbox.degraded else "",
    )
    for s in streams:
        c = s.counters()
        logger.info(
            "stream %s: %d readings accepted, rejected %s, %d forecasts (%d batched, %d out of "
            "the model's verified range), %d gaps",
            s.name,
            c["accepted"],
            c["rejected"] or "none",
            c["forecasts"],
            c["batched"],
            c["forecasts_out_of_range"],
            c["gaps"],
        )
