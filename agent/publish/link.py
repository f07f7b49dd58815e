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
import select
import ssl
import time
from socket import socket as Socket
from typing import Any, Callable, Optional

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sensorcast.agent.config import MqttConfig
from sensorcast.agent.errors import PublishError
from sensorcast.agent.publish.connecting import TCP_CONNECT_S, answers_mqtt311, configure
from sensorcast.agent.publish.mqtt5 import Stamps, reply_of
from sensorcast.agent.publish.refusals import hint, unanswered, wrong_protocol

__all__ = ["TCP_CONNECT_S", "MessageHandler", "MqttLink"]

logger = logging.getLogger(__name__)

#: Called from the main loop (inside :meth:`MqttLink.poll`) with ``(payload, arrival unix s)``.
MessageHandler = Callable[[bytes, float], None]


#: Packets handled per poll (about; paho may take a few more in one call), so a flood backs
#: up in the broker and cannot starve the loop.
READS_PER_POLL = 64
MISC_S = 0.25  #: How often keepalive and reconnecting are looked after, seconds.
UNSUPPORTED_PROTOCOL = 0x84  #: CONNACK reason (3.1.1's return code 1): wrong MQTT version.


class MqttLink:
    """Owns the paho client: availability (retained ``online``, will ``offline``),
    subscriptions that survive reconnects, and publishing.

    Start-up is strict (an unreachable or refusing broker is an error); after
    that, it reconnects with capped exponential backoff. Everything but
    :meth:`publish_later` belongs to the thread that calls :meth:`poll`.
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
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
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
        self._delay = cfg.reconnect_min_s
        self._attempt_started: Optional[float] = None  # a reconnect waiting for its CONNACK
        self._stale = False  # that reconnect never got its CONNACK
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

    def connect(self) -> None:
        """Connect, wait for the broker's answer, and go online.

        Raises :class:`PublishError` with the reason if the broker cannot be
        reached or refuses the connection.
        """
        where = f"MQTT broker {self.cfg.host}:{self.cfg.port} (mqtt.url)"
        self._open(where)
        deadline = time.monotonic() + self.cfg.connect_timeout_s
        while not self._connack and self._client.socket() is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.poll(min(left, 0.1))
        if not self._connack:
            raise self._unanswered(where)
        reason = self._connack_reason
        if reason is not None and reason.is_failure:
            self._client.disconnect()
            if reason.value == UNSUPPORTED_PROTOCOL:
                raise PublishError(f"{where} {wrong_protocol(self.cfg.protocol)}")
            raise PublishError(f"{where} refused the connection: {reason}; {hint(reason)}")
        self._started = True

    def _open(self, where: str) -> None:
        """The TCP (and TLS) connect and the CONNECT packet; a failure as a PublishError."""
        try:
            if self._connect_props is not None:  # MQTT 5
                self._client.connect(
                    self.cfg.host,
                    self.cfg.port,
                    keepalive=self.cfg.keepalive_s,
                    clean_start=self.cfg.session_expiry_s == 0,
                    properties=self._connect_props,
                )
            else:
                self._client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except ssl.SSLError as exc:
            detail = getattr(exc, "verify_message", None) or exc.reason or exc
            raise PublishError(
                f"TLS with {where} failed: {detail}; check mqtt.ca_file, "
                "mqtt.cert_file and mqtt.key_file, and that the broker's certificate names the host"
            ) from exc
        except OSError as exc:
            raise PublishError(
                f"cannot reach {where}: {exc.strerror or exc}; "
                "check the URL and that the broker runs"
            ) from exc

    def _unanswered(self, where: str) -> PublishError:
        """Disconnect after no CONNACK came, and the error that says the likely why."""
        closed = self._client.socket() is None
        self._client.disconnect()
        # A 3.1.1-only broker may not answer an MQTT 5 CONNECT at all (amqtt reads its
        # properties as the payload and waits for more), or hang up: ask it in 3.1.1.
        mqtt311_only = self.cfg.protocol == "5" and answers_mqtt311(self.cfg)
        return unanswered(where, self.cfg, closed=closed, mqtt311_only=mqtt311_only)

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
        readable = self._wait(sock, extra, timeout)
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

    def _wait(self, sock: Optional[Any], extra: Optional[Socket], timeout: float) -> list[Any]:
        """Up to ``timeout`` s for the broker's socket or ``extra``: the readable ones."""
        rlist: list[Any] = [] if extra is None else [extra]
        wlist: list[Any] = []
        if sock is not None:
            rlist.append(sock)
            if self._client.want_write():
                wlist.append(sock)
        if rlist or wlist:
            try:
                return select.select(rlist, wlist, [], timeout)[0]
            except (OSError, ValueError):  # the socket closed under us: next turn reconnects
                return []
        if timeout > 0:
            time.sleep(timeout)
        return []

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

    def _maintain(self) -> None:
        """Keepalive pings, a lost broker noticed, and reconnecting with backoff."""
        now = time.monotonic()
        self._next_misc = now + MISC_S
        client = self._client
        if client.socket() is not None:
            client.loop_misc()
            started = self._attempt_started
            if started is not None and now - started > self.cfg.connect_timeout_s:
                logger.warning("MQTT broker did not answer the reconnect; trying again")
                self._attempt_started = None
                self._stale = True  # reconnect() closes the silent socket itself
                self._schedule(now)
        if self._closing or not self._started or now < self._next_attempt:
            return
        if client.socket() is None or self._stale:
            self._stale = False
            self._reconnect(now)

    def _reconnect(self, now: float) -> None:
        try:
            self._client.reconnect()  # TCP (and TLS) connect: at most TCP_CONNECT_S
        except OSError as exc:
            self._schedule(now)
            logger.debug("reconnect to MQTT broker failed: %s", exc)
            return
        self._attempt_started = time.monotonic()

    def _schedule(self, now: float) -> None:
        self._next_attempt = now + self._delay
        self._delay = min(self._delay * 2, self.cfg.reconnect_max_s)

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
        if reason.is_failure:
            if reason.value == UNSUPPORTED_PROTOCOL:
                logger.error("MQTT broker %s", wrong_protocol(self.cfg.protocol))
            else:
                logger.error("MQTT broker refused the connection: %s; %s", reason, hint(reason))
            return
        if self.connected is False and self.reconnects:
            logger.info("reconnected to MQTT broker")
        self.connected = True
        self.disconnected_since = None
        self._delay = self.cfg.reconnect_min_s
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
        if self.connected and not self._closing:
            self.reconnects += 1
            logger.warning("disconnected from MQTT broker (%s); reconnecting", reason)
        if self.connected:
            self.disconnected_since = time.time()
        self.connected = False
        self._attempt_started = None
        if self._started and not self._closing:
            self._schedule(time.monotonic())
