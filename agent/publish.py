"""Turn a forecast into one MQTT message on ``<prefix>/<device>/<stream>/forecast``."""

from __future__ import annotations

import logging
import queue
import time
from typing import Optional

import numpy as np
import orjson

from agent.logutil import RateLimitedLog
from agent.mqtt import MqttLink
from agent.outbox import Message, Outbox

#: Acks with no new message to carry them are committed after this long, seconds
#: (new messages are committed every loop turn, connected or not).
SYNC_S = 1.0

__all__ = ["ForecastPublisher", "OutboxSender", "forecast_topic", "status_topic"]

logger = logging.getLogger(__name__)


def status_topic(prefix: str, device: str) -> str:
    """Availability topic: retained ``online``, ``offline`` as will and on shutdown."""
    return f"{prefix}/{device}/status"


def forecast_topic(prefix: str, device: str, stream: str) -> str:
    """Where a stream's forecasts go."""
    return f"{prefix}/{device}/{stream}/forecast"


class ForecastPublisher:
    """Formats forecasts of one stream as JSON and puts them in the outbox."""

    def __init__(
        self,
        outbox: Outbox,
        device: str,
        stream: str,
        prefix: str,
        qos: int,
        targets: tuple[str, ...],
        period_s: float,
        retain: bool = False,
    ) -> None:
        self._outbox = outbox
        self._device = device
        self._stream = stream
        self._qos = qos
        self.topic = forecast_topic(prefix, device, stream)
        self._targets = list(targets)
        self._period = period_s
        self._retain = retain
        self.seq = 0
        self._id = f"{device}/{stream}/"
        self._offsets: Optional[np.ndarray] = None  # (i + 1) * period_s, per horizon step

    def publish(self, model: str, window_end: float, values: np.ndarray) -> int:
        """Queue a ``(horizon, targets)`` forecast for the window ending at ``window_end``.

        ``window_end`` is the start time (Unix s) of the window's newest period;
        step ``i`` (from 0) is the period starting ``(i + 1) * period_s`` later.
        The message's ``id`` is stable (device, stream, window end) so consumers
        can drop the duplicates QoS 1 may deliver. Returns the outbox id.
        """
        payload = self.payload(model, window_end, values)
        self.seq += 1
        return self._outbox.put(self.topic, payload, self._qos, self._retain)

    def payload(self, model: str, window_end: float, values: np.ndarray) -> bytes:
        """The JSON message (compact, keys in a fixed order) for one forecast.

        Numbers are the shortest text that reads back as the same float; a non-finite
        forecast value (a broken model) is ``null``, which every JSON parser reads.
        """
        offsets = self._offsets
        if offsets is None or len(offsets) != values.shape[0]:
            offsets = self._offsets = np.arange(1, values.shape[0] + 1) * self._period
        message = {
            "id": f"{self._id}{round(window_end * 1000)}",
            "device": self._device,
            "stream": self._stream,
            "model": model,
            "seq": self.seq,
            "window_end": window_end,
            "period_s": self._period,
            "targets": self._targets,
            "steps": offsets + window_end,
            "values": values if values.flags.c_contiguous else np.ascontiguousarray(values),
        }
        # orjson (numpy arrays natively): a fifth of the hand-formatted text's cost.
        return orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)


class OutboxSender:
    """Moves messages from the outbox to the broker, in order, and forgets acked ones.

    Runs in the main loop. Each message is handed to the MQTT client once per
    process (at most ``max_inflight`` unacknowledged at a time); across a
    reconnect the client itself re-sends what was in flight, flagged as a
    duplicate, so the agent never publishes a message twice. After a restart,
    what the outbox still holds is sent again: QoS 1 is at-least-once, and the
    payload's ``id`` lets consumers drop the rare duplicate.

    A message the broker refuses (MQTT 5: a PUBACK reason code of 0x80 or more, such as
    135 "not authorized" from an ACL) leaves the outbox too, counted in :attr:`refused`
    and logged (rate-limited, with the topic and the reason): the same message would be
    refused again, and retrying it would hold up every message behind it.
    """

    def __init__(self, outbox: Outbox, link: MqttLink, max_inflight: int = 20) -> None:
        self.outbox = outbox
        self._link = link
        self._max_inflight = max_inflight
        self._inflight: dict[int, Message] = {}  # paho mid -> the message
        self._last_sent = 0
        self.sent = 0  #: Messages handed to the MQTT client, less those the broker refused.
        self.refused = 0  #: Messages the broker refused (MQTT 5 PUBACK reason >= 0x80).
        self._log = RateLimitedLog(logger)

    def pump(self) -> None:
        """Handle acknowledgements, then send what the in-flight window allows."""
        while True:
            try:
                mid = self._link.acks.get_nowait()
            except queue.Empty:
                break
            self._acked(mid)
        self.outbox.sync(SYNC_S)
        if not self._link.connected:
            return
        room = self._max_inflight - len(self._inflight)
        if room <= 0:
            return
        # Nothing new to send: every queued message is in flight (skips a disk read per loop
        # turn). Only while nothing was dropped: a dropped message may still be in _inflight.
        if self.outbox.depth <= len(self._inflight) and not self.outbox.dropped:
            return
        for msg in self.outbox.pending(after=self._last_sent, limit=room):
            info = self._link.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            if msg.qos == 0:
                if info.rc != 0:  # not connected after all; try again next time
                    return
                self._last_sent = msg.id
                self.sent += 1
                self.outbox.ack(msg.id)
                continue
            # QoS 1/2: the client now holds the message and sends it, or re-sends it
            # after the next connect, even when it reports "not connected" here. Its ack
            # can only be read by a later poll: acks are drained before this loop.
            self._last_sent = msg.id
            self.sent += 1
            self._inflight[info.mid] = msg

    def _acked(self, mid: int) -> None:
        msg = self._inflight.pop(mid, None)
        if msg is not None:
            self._done(mid, msg)
            return
        # Not from the outbox: status, discovery, quality, metrics. Nothing to forget (and
        # nothing to remember: paho reuses mids, a stale one must not ack a later forecast).
        refused = self._link.refused.pop(mid, None) if self._link.refused else None
        if refused is not None:
            self._log.warning(
                "refused:other",
                "broker refused a status, discovery or quality message: %s (reason code %d); "
                "check the broker's ACL for this client",
                refused,
                refused.value,
            )

    def _done(self, mid: int, msg: Message) -> None:
        """The broker answered: the message leaves the outbox, taken or refused."""
        self.outbox.ack(msg.id)
        refused = self._link.refused
        if refused:  # rare: only an MQTT 5 broker says no
            reason = refused.pop(mid, None)
            if reason is not None:
                self.sent -= 1
                self.refused += 1
                self._log.warning(
                    f"refused:{msg.topic}",
                    "broker refused the message on %s: %s (reason code %d); removed from the "
                    "outbox, not retried (%d refused since start): check the broker's ACL for "
                    "this client",
                    msg.topic,
                    reason,
                    reason.value,
                    self.refused,
                )

    def flush(self, timeout_s: float) -> bool:
        """Pump until the outbox is empty or ``timeout_s`` passes; True if empty."""
        deadline = time.monotonic() + timeout_s
        while self.outbox.depth and time.monotonic() < deadline:
            self.pump()
            self._link.poll(0.01)
        return self.outbox.depth == 0
