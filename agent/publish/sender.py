"""Drain the outbox to the broker in order; forget what the broker acknowledged."""

from __future__ import annotations

import logging
import queue
import time

from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.publish.link import INFLIGHT, MqttLink
from sensorcast.agent.publish.outbox import Message, Outbox

__all__ = ["OutboxSender"]

#: Acks with no new message to carry them are committed after this long, seconds
#: (new messages are committed every loop turn, connected or not).
SYNC_S = 1.0

logger = logging.getLogger(__name__)


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

    Each message goes out with the time it was put (``Message.created``): in MQTT 5 a
    forecast's expiry is its staleness limit less the time it waited
    (:class:`~sensorcast.agent.publish.mqtt5.Stamps`).
    """

    def __init__(self, outbox: Outbox, link: MqttLink, max_inflight: int = INFLIGHT) -> None:
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
        todo = self.outbox.pending(after=self._last_sent, limit=room)
        if not todo:
            return
        with self._link.batch(len(todo) > 1):  # one write for all of them, at the end
            self._send(todo)

    def _send(self, todo: list[Message]) -> None:
        for msg in todo:
            info = self._link.publish(
                msg.topic, msg.payload, qos=msg.qos, retain=msg.retain, queued_at=msg.created
            )
            if msg.qos == 0:
                # at most once: written at the batch's end, so a connection lost by that write
                # loses this turn's QoS 0 messages (one message before the batch)
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
