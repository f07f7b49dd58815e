"""The agent's one connection to the MQTT broker (paho-mqtt 2.x)."""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from typing import Any, Callable, Optional

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttConfig
from agent.errors import PublishError

__all__ = ["MessageHandler", "MqttLink"]

logger = logging.getLogger(__name__)

#: Called from paho's network thread with ``(payload, arrival unix seconds)``.
MessageHandler = Callable[[bytes, float], None]


class MqttLink:
    """Owns the paho client: availability (retained ``online``, will ``offline``),
    subscriptions that survive reconnects, and publishing.

    Start-up is strict (an unreachable or refusing broker is an error); after
    that, paho reconnects with capped exponential backoff.
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
        self._client.reconnect_delay_set(
            min_delay=max(1, round(cfg.reconnect_min_s)),
            max_delay=max(1, round(cfg.reconnect_max_s)),
        )
        if cfg.username is not None:
            password = cfg.password.reveal() if cfg.password is not None else None
            self._client.username_pw_set(cfg.username, password)
        if cfg.tls:
            self._client.tls_set(
                ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                certfile=str(cfg.cert_file) if cfg.cert_file else None,
                keyfile=str(cfg.key_file) if cfg.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            # Hostname verification stays on unless the user turned it off explicitly.
            self._client.tls_insecure_set(cfg.tls_insecure)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        #: Message ids (paho ``mid``) the broker acknowledged; drained by the main loop.
        self.acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._subscriptions: list[tuple[str, int]] = []
        #: Called (network thread) after every successful connect, once online is published.
        self.on_connected: list[Callable[[], None]] = []
        #: If set, asked before each incoming message is handled; False drops it (load shedding).
        self.gate: Optional[Callable[[], bool]] = None
        self._connack = threading.Event()
        self._connack_reason: Any = None
        self.connected = False
        #: Unix time the connection was lost, None while connected.
        self.disconnected_since: Optional[float] = time.time()
        self.reconnects = 0
        self._closing = False

    def subscribe(
        self, topic: str, handler: MessageHandler, qos: int = 1, gated: bool = True
    ) -> None:
        """Route messages on ``topic`` to ``handler``; call before :meth:`connect`.

        ``gated`` messages pass :attr:`gate` first (input readings); control topics do not.
        """

        def on_message(_client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
            gate = self.gate if gated else None
            if gate is not None and not gate():
                return  # shed before parsing: under a flood, parsing is the cost
            handler(bytes(msg.payload), time.time())

        self._client.message_callback_add(topic, on_message)
        self._subscriptions.append((topic, qos))

    def connect(self) -> None:
        """Connect, wait for the broker's answer, and go online.

        Raises :class:`PublishError` with the reason if the broker cannot be
        reached or refuses the connection.
        """
        where = f"MQTT broker {self.cfg.host}:{self.cfg.port} (mqtt.url)"
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
        self._client.loop_start()
        if not self._connack.wait(self.cfg.connect_timeout_s):
            self._stop_loop()
            raise PublishError(
                f"{where} did not answer within {self.cfg.connect_timeout_s:g} s "
                "(mqtt.connect_timeout_s); is it an MQTT broker?"
            )
        reason = self._connack_reason
        if reason is not None and reason.is_failure:
            self._stop_loop()
            raise PublishError(
                f"{where} refused the connection: {reason}; check mqtt.username and the password"
            )

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> Any:
        """Queue a message with paho; returns paho's ``MQTTMessageInfo``."""
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def close(self, timeout_s: float = 5.0) -> None:
        """Publish ``offline`` (retained), wait for it, and disconnect cleanly."""
        self._closing = True
        if self.connected:
            info = self._client.publish(
                self.status_topic, b"offline", qos=self.cfg.qos, retain=True
            )
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                logger.warning("could not publish offline status before disconnecting")
        self._client.disconnect()
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._client.loop_stop()

    def _on_publish(
        self, _client: paho.Client, _userdata: Any, mid: int, _reason: Any, _props: Any
    ) -> None:
        self.acks.put(mid)

    def _on_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._connack_reason = reason
        self._connack.set()
        if reason.is_failure:
            logger.error("MQTT broker refused the connection: %s", reason)
            return
        if self.connected is False and self.reconnects:
            logger.info("reconnected to MQTT broker")
        self.connected = True
        self.disconnected_since = None
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos=qos)
        client.publish(self.status_topic, b"online", qos=self.cfg.qos, retain=True)
        for callback in self.on_connected:
            try:
                callback()
            except Exception:  # a hook must not kill paho's network thread
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
