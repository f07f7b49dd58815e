"""The agent's one connection to the MQTT broker (paho-mqtt 2.x), driven by the main loop.

paho's network work (reading, writing, keepalive pings, reconnecting) runs in the agent's
own loop through :meth:`MqttLink.poll`, not in paho's ``loop_start()`` thread: one thread
means no lock on the hot path, no hand-over of the interpreter lock between paho and the
forecasts (it cost about 30 % of the CPU per forecast), and under a flood the loop reads
only as fast as it forecasts, so the broker holds the backlog, not the agent's memory.
"""

from __future__ import annotations

import collections
import logging
import queue
import time
from socket import socket as Socket
from typing import Any, Callable, Optional

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sensorcast.agent.config import MqttConfig
from sensorcast.agent.errors import PublishError
from sensorcast.agent.publish.connecting import (
    TCP_CONNECT_S,
    aim,
    configure,
    open_connection,
    unanswered_error,
)
from sensorcast.agent.publish.failover import Rotation
from sensorcast.agent.publish.mqtt5 import Stamps, reply_of
from sensorcast.agent.publish.refusals import none_accepted, refused
from sensorcast.agent.publish.writes import WriteBatch, wait

__all__ = ["INFLIGHT", "TCP_CONNECT_S", "MessageHandler", "MqttLink"]

logger = logging.getLogger(__name__)

#: Called from the main loop (inside :meth:`MqttLink.poll`) with ``(payload, arrival unix s)``.
MessageHandler = Callable[[bytes, float], None]


#: Packets handled per poll (about; paho may take a few more in one call), so a flood backs
#: up in the broker and cannot starve the loop.
READS_PER_POLL = 64
MISC_S = 0.25  #: How often keepalive and reconnecting are looked after, seconds.
#: Outbox messages in flight at once (the sender's window): the forecasts of 100 streams
#: sharing a tick go out in one turn. paho may hold twice that (status, quality, metrics too).
INFLIGHT = 100


class MqttLink:
    """Owns the paho client: availability (retained ``online``, will ``offline``),
    subscriptions that survive reconnects, and publishing.

    Start-up is strict (no broker of ``mqtt.url`` reachable and accepting is an error);
    after that, it reconnects, failing over to the next broker of the list after each
    failed attempt, with capped exponential backoff after a whole round
    (:mod:`.failover`). Everything but :meth:`publish_later` belongs to the thread that
    calls :meth:`poll`.
    """

    def __init__(self, cfg: MqttConfig, status_topic: str) -> None:
        self.cfg = cfg
        self.status_topic = status_topic
        v5 = cfg.protocol == "5"
        persistent = cfg.session_expiry_s > 0
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else not persistent,
        )
        self._connect_props: Any = None
        if v5:
            self._connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            self._connect_props.SessionExpiryInterval = cfg.session_expiry_s
        self._client.will_set(status_topic, b"offline", qos=cfg.qos, retain=True)
        configure(self._client, cfg)
        self._client.max_inflight_messages_set(2 * INFLIGHT)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._batch = WriteBatch(self._client)
        #: Message ids (paho ``mid``) the broker acknowledged; drained by the main loop.
        self.acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        #: Of those, the ones the broker refused (MQTT 5 PUBACK reason code >= 0x80, e.g. 135
        #: not authorized): mid -> paho ``ReasonCode``; the consumer of :attr:`acks` pops them.
        self.refused: dict[int, Any] = {}
        #: Messages other threads asked to publish (:meth:`publish_later`), and how to
        #: wake the loop for them.
        self._later: collections.deque[tuple[str, bytes, int, bool, Optional[bytes]]] = (
            collections.deque()
        )
        self.wake: Optional[Callable[[], None]] = None
        self._calls: collections.deque[Callable[[], None]] = collections.deque()  # call_soon
        self._handled = 0  # packets that reached a callback: tells a busy socket from a dry one
        self._started = False  # connect() succeeded: from now on, reconnect when lost
        self._next_misc = 0.0
        self._next_attempt = 0.0
        self._rotation = Rotation(cfg)  # which broker, and the backoff
        self._attempt_started: Optional[float] = None  # a reconnect waiting for its CONNACK
        self._subscriptions: list[tuple[str, int]] = []
        #: Called (in poll) after every successful connect, once online is published.
        self.on_connected: list[Callable[[], None]] = []
        #: If set, asked before each incoming message is handled; False drops it (load shedding).
        self.gate: Optional[Callable[[], bool]] = None
        #: The properties of what it publishes (content type, schema, a forecast's expiry),
        #: set by whoever knows the streams (``telemetry.report.Reporter``).
        self.stamps: Optional[Stamps] = None
        self._connack = False
        self._connack_reason: Any = None
        self.connected = False
        #: Unix time the connection was lost, None while connected.
        self.disconnected_since: Optional[float] = time.time()
        self.reconnects = 0
        self._closing = False

    def subscribe(
        self,
        topic: str,
        handler: Any,
        qos: int = 1,
        gated: bool = True,
        with_reply: bool = False,
    ) -> None:
        """Route messages on ``topic`` to ``handler``; call before :meth:`connect`.

        ``gated`` messages pass :attr:`gate` first (input readings); control topics do not.
        ``with_reply``: ``handler`` is a ``ReplyHandler`` (:mod:`.mqtt5`) and also gets
        the message's MQTT 5 response topic and correlation data (None without them, or
        in 3.1.1).
        """

        def on_message(_client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
            self._handled += 1
            gate = self.gate if gated else None
            if gate is not None and not gate():
                return  # shed before parsing: under a flood, parsing is the cost
            if with_reply:
                handler(bytes(msg.payload), time.time(), reply_of(msg))
            else:
                handler(bytes(msg.payload), time.time())

        self._client.message_callback_add(topic, on_message)
        self._subscriptions.append((topic, qos))

    @property
    def broker(self) -> str:
        """The broker connected to (or tried next) as ``host:port``."""
        return self._rotation.name

    @property
    def failovers(self) -> int:
        """How often the link connected to another broker of ``mqtt.url`` than before."""
        return self._rotation.failovers

    def connect(self) -> None:
        """Connect to the first broker of ``mqtt.url`` that accepts, and go online; raises
        :class:`PublishError` with each broker's reason if none can be reached or accepts."""
        rotation, errors = self._rotation, []
        for _ in rotation.brokers:
            try:
                self._connect_current()
                break
            except PublishError as exc:
                errors.append(str(exc))
                rotation.failed()  # logs nothing: the error lists them all
        else:
            raise none_accepted(errors)
        self._started = True

    def _where(self) -> str:
        """The current broker, for error messages."""
        return f"{self._rotation.where} (mqtt.url)"

    def _connect_current(self) -> None:
        """Connect to the current broker and wait for its CONNACK; PublishError if not."""
        where = self._where()
        self._connack, self._connack_reason = False, None
        host, port = self._rotation.current
        open_connection(self._client, self.cfg, host, port, self._connect_props, where)
        deadline = time.monotonic() + self.cfg.connect_timeout_s
        while not self._connack and self._client.socket() is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.poll(min(left, 0.1))
        if not self._connack:
            raise unanswered_error(self._client, self.cfg, host, port, where)
        reason = self._connack_reason
        if reason is not None and reason.is_failure:
            self._client.disconnect()
            raise PublishError(refused(where, reason, self.cfg.protocol))

    def socket(self) -> Optional[Socket]:
        """The broker connection's socket, None while disconnected."""
        sock: Any = self._client.socket()
        return sock  # type: ignore[no-any-return]

    def poll(self, timeout: float, extra: Optional[Socket] = None) -> bool:
        """Wait up to ``timeout`` s for the broker (or for ``extra`` to be readable), then
        do paho's reading, writing, keepalive and reconnecting. Returns True if ``extra``
        is readable (another thread woke the loop)."""
        self._from_other_threads()
        sock = self._client.socket()
        readable = wait(self._client, extra, timeout)
        client = self._client
        if sock is not None and sock in readable:
            # One loop_read() takes one packet, or as many as paho has messages in flight.
            limit = self._handled + READS_PER_POLL
            while self._handled < limit:
                before = self._handled
                client.loop_read()
                if self._handled == before or client.socket() is None:
                    break  # the socket ran dry (or closed)
        if client.socket() is not None and client.want_write():
            client.loop_write()  # what callbacks published, or what a full socket held back
        if time.monotonic() >= self._next_misc:
            self._maintain()
        return extra is not None and extra in readable

    def _from_other_threads(self) -> None:
        """What other threads asked for (:meth:`call_soon`, :meth:`publish_later`), done in
        the loop's thread."""
        while self._calls:  # from other threads: run in this one
            try:
                self._calls.popleft()()
            except Exception:  # another thread's job must not break the loop
                logger.exception("in a call from another thread")
        while self._later:  # from other threads: publish in this one
            topic, payload, qos, retain, correlation = self._later.popleft()
            stamps, props = self.stamps, None
            if stamps is not None:
                props = stamps.properties(topic, None, time.time(), "model_state", correlation)
            elif correlation is not None and self.cfg.protocol == "5":
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.CorrelationData = correlation
            self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)

    def publish_later(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        correlation: Optional[bytes] = None,
    ) -> None:
        """Publish from another thread: the loop sends it at its next turn. ``correlation``:
        MQTT 5 correlation data to send with it (the answer to a request's ``Reply``). Its
        MQTT 5 properties are those of its topic's JSON; on another topic (a request's
        response topic) those of ``model/state``, the only answer the agent gives."""
        self._later.append((topic, payload, qos, retain, correlation))
        if self.wake is not None:
            self.wake()

    def call_soon(self, job: Callable[[], None]) -> None:
        """Run ``job()`` in the loop's thread at its next turn (call from any thread): for
        another thread that needs what only the loop may touch."""
        self._calls.append(job)
        if self.wake is not None:
            self.wake()

    def next_due(self) -> float:
        """Monotonic time by which :meth:`poll` must run again: paho's keepalive, the next
        reconnect step (the idle main loop sleeps until then, :mod:`..wakeups`)."""
        if not self._started or self._closing:
            return self._next_misc
        if self._attempt_started is not None:  # a reconnect waiting for its CONNACK
            return max(self._next_misc, self._attempt_started + self.cfg.connect_timeout_s)
        if not self.connected:
            return max(self._next_misc, self._next_attempt)
        return max(self._next_misc, time.monotonic() + self.cfg.keepalive_s / 4)

    def _maintain(self) -> None:
        """Keepalive pings, a lost broker noticed, and reconnecting with backoff."""
        now = time.monotonic()
        self._next_misc = now + MISC_S
        client = self._client
        if client.socket() is not None:
            client.loop_misc()
            started = self._attempt_started
            if started is not None and now - started > self.cfg.connect_timeout_s:
                self._attempt_started = None
                self._failed(f"{self._where()} did not answer the reconnect")
                # Close the silent socket now (a CONNACK after this must not count) and aim
                # at the broker the next attempt is for.
                aim(client, self.cfg, *self._rotation.current, self._connect_props)
        if self._closing or not self._started or now < self._next_attempt:
            return
        # (a socket that is neither connected nor an attempt is a leftover: replace it too)
        if client.socket() is None or not (self.connected or self._attempt_started is not None):
            self._reconnect()

    def _reconnect(self) -> None:
        """One attempt on the current broker: TCP (and TLS) connect, at most TCP_CONNECT_S."""
        host, port = self._rotation.current
        try:
            open_connection(self._client, self.cfg, host, port, self._connect_props, self._where())
        except PublishError as exc:
            self._failed(str(exc), logging.DEBUG)
            return
        self._attempt_started = time.monotonic()

    def _failed(self, why: str, level: int = logging.WARNING) -> None:
        """An attempt on the current broker failed: the next broker, now or after the
        backoff once a whole round failed (:meth:`.Rotation.failed` logs ``why``)."""
        self._next_attempt = time.monotonic() + self._rotation.failed(why, level)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        queued_at: Optional[float] = None,
    ) -> Any:
        """Queue a message with paho; returns paho's ``MQTTMessageInfo``. ``queued_at``:
        when it was put in the outbox (Unix s), which shortens a forecast's MQTT 5 expiry."""
        stamps = self.stamps
        props = stamps.properties(topic, queued_at, time.time()) if stamps else None
        return self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)

    def batch(self, many: bool = True) -> WriteBatch:
        """``with link.batch():`` the publishes inside go out in one write at its end
        (:mod:`.writes`; ``many`` False: one message, the socket left uncorked)."""
        return self._batch(many)

    def close(self, timeout_s: float = 5.0) -> None:
        """Publish ``offline`` (retained), wait for it, and disconnect cleanly."""
        self._closing = True
        deadline = time.monotonic() + timeout_s
        if self.connected:
            info = self._client.publish(
                self.status_topic, b"offline", qos=self.cfg.qos, retain=True
            )
            while not info.is_published() and self.connected and time.monotonic() < deadline:
                self.poll(0.05)
            if not info.is_published():
                logger.warning("could not publish offline status before disconnecting")
        self._client.disconnect()  # written now, or by the polls below; then the socket closes
        while self._client.socket() is not None and time.monotonic() < deadline:
            self.poll(0.05)

    def _on_publish(
        self, _client: paho.Client, _userdata: Any, mid: int, reason: Any, _props: Any
    ) -> None:
        self._handled += 1
        if reason.is_failure:  # MQTT 5 only: 3.1.1's PUBACK carries no reason
            self.refused[mid] = reason
        self.acks.put(mid)

    def _on_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._handled += 1
        self._connack_reason = reason
        self._connack = True
        self._attempt_started = None
        rotation = self._rotation
        if reason.is_failure:
            why = refused(rotation.where, reason, self.cfg.protocol)
            if self._started and not self._closing:
                self._failed(why, logging.ERROR)  # paho closes the socket next
            else:
                logger.error("%s", why)
            return
        again = "re" if self.connected is False and self.reconnects else ""
        logger.info("%sconnected to %s", again, rotation.where)
        rotation.connected()
        self.connected = True
        self.disconnected_since = None
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos=qos)
        client.publish(self.status_topic, b"online", qos=self.cfg.qos, retain=True)
        for callback in self.on_connected:
            try:
                callback()
            except Exception:  # a hook must not break the connection's handling
                logger.exception("after connecting")

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        was_connected, pending = self.connected, self._attempt_started is not None
        if was_connected and not self._closing:
            self.reconnects += 1
            logger.warning("disconnected from %s (%s); reconnecting", self._rotation.where, reason)
        if was_connected:
            self.disconnected_since = time.time()
        self.connected = False
        self._attempt_started = None
        if not self._started or self._closing:
            return
        if was_connected:  # a new round, starting with the broker just lost
            self._next_attempt = time.monotonic() + self._rotation.lost()
        elif pending:  # a reconnect the broker hung up on before its CONNACK
            self._failed(f"{self._where()} closed the connection without answering")
