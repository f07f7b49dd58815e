"""The fleet controller's MQTT client: one paho 2.x client (MQTT 3.1.1, clean session, QoS 1)
whose network thread (``loop_start``) keeps a live :class:`~sensorcast.agent.fleet.model.Fleet`
from the devices' retained messages, and publishes requests with the broker's ack awaited.

The controller holds no session on the broker: everything it needs to know is retained there,
and it reads it all again at each connect (the subscriptions are renewed after a reconnect).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sensorcast.agent.errors import ConfigError, SensorcastError
from sensorcast.agent.fleet import view as fleet_view
from sensorcast.agent.fleet.model import Fleet
from sensorcast.agent.publish.topics import FLEET, FleetTopics

__all__ = ["CONNECT_S", "Connection", "FleetClient", "FleetError", "parse_url"]

logger = logging.getLogger(__name__)

CONNECT_S = 5.0  #: Longest wait for one broker's TCP connect, then its CONNACK, seconds.
PUBACK_S = 10.0  #: Longest wait for the broker's ack of one publish, seconds.
KEEPALIVE_S = 30  #: MQTT keepalive, seconds.


class FleetError(SensorcastError):
    """The broker cannot be reached, refused the controller, or did not ack in time."""


@dataclass(frozen=True)
class Connection:
    """Where and how the controller connects (the ``sensorcast fleet`` connection flags)."""

    urls: tuple[str, ...]  #: ``mqtt://host[:port]`` or ``mqtts://``, tried in order.
    prefix: str = "sensorcast"  #: The devices' ``mqtt.topic_prefix``.
    username: Optional[str] = None
    password: Optional[str] = None
    ca_file: Optional[Path] = None  #: TLS: the CA that signed the broker's certificate.
    cert_file: Optional[Path] = None  #: TLS client certificate (with ``key_file``).
    key_file: Optional[Path] = None
    client_id: Optional[str] = None  #: Default ``sensorcast-fleet-<host>-<pid>``.

    def __repr__(self) -> str:  # never the password
        return f"Connection(urls={self.urls!r}, prefix={self.prefix!r})"


def parse_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` -> host, port, TLS."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--url {url!r}: {exc}; write it as mqtt://HOST[:PORT]") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"--url {url!r}: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    if parts.password is not None:
        raise ConfigError(f"--url {url!r}: no password in the URL; use --password-file")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if tls else 1883), tls


class FleetClient:
    """The controller's connection and its live view of the fleet (see the module doc)."""

    def __init__(self, conn: Connection) -> None:
        if not conn.urls:
            raise ConfigError("no broker: give --url mqtt://HOST[:PORT]")
        self.conn = conn
        self.topics = FleetTopics(conn.prefix)
        self.client_id = conn.client_id or f"sensorcast-fleet-{socket.gethostname()}-{os.getpid()}"
        #: Marker the controller sends itself after subscribing: once it is back, every
        #: retained message the broker queued for those subscriptions has arrived.
        self.sync_topic = f"{conn.prefix}/{FLEET}/controllers/{self.client_id}/sync"
        self._cond = threading.Condition()
        self._fleet = Fleet(conn.prefix)
        self._filters: list[str] = []  # subscribed, renewed after a reconnect
        self._callbacks: list[Callable[[str, bytes], None]] = []
        self._client: Optional[paho.Client] = None
        self._synced = False  # watch() saw every filter's retained burst end
        self._marker = 0  # the last marker sent (a counter)
        self._echoed = 0  # the last marker back
        self._last_retained = time.monotonic()

    # connection ------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect to the first broker of ``conn.urls`` that accepts us."""
        problems: list[str] = []
        for url in self.conn.urls:
            host, port, tls = parse_url(url)
            client = self._new_client(tls)
            problem = _connect(client, host, port)
            if problem is None:
                self._client = client
                logger.debug("connected to %s:%d as %s", host, port, self.client_id)
                return
            problems.append(f"{host}:{port}: {problem}")
        if len(problems) == 1:
            raise FleetError(
                f"cannot reach MQTT broker {problems[0]}; check the broker runs there "
                "and --url (credentials: --username, --password-file)"
            )
        raise FleetError(
            f"cannot reach any MQTT broker of --url ({'; '.join(problems)}); check the "
            "brokers run there (credentials: --username, --password-file)"
        )

    def _new_client(self, tls: bool) -> paho.Client:
        c = self.conn
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        client.connect_timeout = CONNECT_S
        client.reconnect_delay_set(1, 10)
        if c.username is not None:
            client.username_pw_set(c.username, c.password)
        if tls:
            try:
                client.tls_set(
                    ca_certs=str(c.ca_file) if c.ca_file else None,
                    certfile=str(c.cert_file) if c.cert_file else None,
                    keyfile=str(c.key_file) if c.key_file else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                )
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ConfigError(
                    f"--ca-file/--cert-file/--key-file: {exc}; give PEM files that match"
                ) from None
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        return client

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.disconnect()
            client.loop_stop()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # reading -----------------------------------------------------------------------------

    def watch(self, quiet_s: float = 0.5, timeout_s: float = 60.0) -> None:
        """Subscribe (QoS 1) to every device's retained state and the sites' bridges, one
        filter at a time, each time waiting until the broker has sent what it retains.

        Brokers cap what they queue for one client (Mosquitto's ``max_queued_messages``,
        1000 by default; EMQX's ``max_mqueue_len``) and drop the rest of a retained burst
        silently: one filter at a time keeps each burst to one message per device (or per
        stream), and a marker the controller sends itself after each SUBSCRIBE tells when
        the burst is over, or that part of it was dropped (the marker with it: the view is
        then marked incomplete, ``Fleet.complete``). A broker that does not echo the marker
        (an ACL without ``<prefix>/fleet/controllers/#``) gets every filter at once, and
        :meth:`settle` waits for ``quiet_s`` without a retained message instead.
        """
        t = self.topics
        filters = [t.statuses, t.metrics, t.model_states, t.qualities, t.anomalies, t.bridges]
        self.subscribe(self.sync_topic)
        if not self._echo(quiet_s, timeout_s):
            logger.warning(
                "the broker does not return the controller's marker on %s (ACL?): reading "
                "the retained state until %g s pass without any",
                self.sync_topic,
                quiet_s,
            )
            self.subscribe(*filters)
            return
        for topic_filter in filters:
            self.subscribe(topic_filter)
            if not self._echo(quiet_s, timeout_s):
                with self._cond:
                    self._fleet.complete = False
                logger.warning(
                    "the broker dropped retained messages on %s (its queue per client is "
                    "full?): raise max_queued_messages (Mosquitto) above the number of "
                    "devices times their streams",
                    topic_filter,
                )
        with self._cond:
            self._synced = True
            self._cond.notify_all()

    def subscribe(self, *filters: str) -> None:
        """Subscribe (QoS 1) to more topic filters; their messages reach :meth:`on_message`
        callbacks (and the view, if they are device state). Renewed after a reconnect."""
        with self._cond:
            self._filters.extend(filters)
            self._last_retained = time.monotonic()  # the quiet spell starts now
        self._live().subscribe([(f, 1) for f in filters])

    def _echo(self, quiet_s: float, timeout_s: float) -> bool:
        """Send the marker and wait for it: True once it is back (everything the broker
        queued before it has arrived); False if it is not back after ``quiet_s`` without a
        retained message, or after ``timeout_s``."""
        with self._cond:
            self._marker += 1
            marker = self._marker
            self._last_retained = time.monotonic()
        # the SUBSCRIBE went before it on the same connection: its retained burst is queued
        # for us before the marker is
        self._live().publish(self.sync_topic, str(marker).encode(), qos=1)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._echoed < marker:
                now = time.monotonic()
                quiet_until = self._last_retained + quiet_s
                if now >= min(deadline, quiet_until):
                    return False
                self._cond.wait(min(deadline, quiet_until) - now)
        return True

    def settle(self, quiet_s: float = 0.5, timeout_s: float = 10.0) -> Fleet:
        """After :meth:`watch`: a copy of the view once the broker has sent the retained
        messages (at once if the markers told; else once none came for ``quiet_s``), at
        most ``timeout_s`` seconds from now."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._synced:
                now = time.monotonic()
                quiet_until = self._last_retained + quiet_s
                if now >= min(deadline, quiet_until):
                    break
                self._cond.wait(min(deadline, quiet_until) - now)
            return self._copy()

    def view(self) -> Fleet:
        """A consistent copy of the live view, now."""
        with self._cond:
            return self._copy()

    def wait(self, predicate: Callable[[Fleet], bool], timeout_s: float) -> bool:
        """Whether ``predicate`` came true within ``timeout_s`` seconds. It runs on the
        live view under the view's lock, at once and after each message: keep it quick, do
        not keep the view (take :meth:`view` for that)."""

        def check() -> bool:
            self._fleet.time = time.time()
            return predicate(self._fleet)

        with self._cond:
            return self._cond.wait_for(check, timeout=timeout_s)

    def on_message(self, callback: Callable[[str, bytes], None]) -> None:
        """Call ``callback(topic, payload)`` for every message (the network thread; after
        the view has it). An exception it raises is logged, not raised."""
        self._callbacks.append(callback)

    # writing ----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait for the broker's ack (QoS 1, 2), up to ``PUBACK_S`` seconds."""
        self.publish_many([(topic, payload)], qos=qos, retain=retain)

    def publish_many(
        self, messages: list[tuple[str, bytes]], qos: int = 1, retain: bool = False
    ) -> None:
        """Publish ``(topic, payload)`` messages all at once, then wait for every ack (a
        thousand requests in one round trip's time, not one after another), up to
        ``PUBACK_S`` seconds in all; FleetError naming the first that failed."""
        client = self._live()
        sent = [(topic, client.publish(topic, payload, qos=qos, retain=retain))
                for topic, payload in messages]  # fmt: skip
        deadline = time.monotonic() + PUBACK_S
        for topic, info in sent:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (ValueError, RuntimeError) as exc:
                raise FleetError(f"publish to {topic}: {exc}; is the broker still there?") from None
            if not info.is_published():
                raise FleetError(
                    f"publish to {topic}: no ack from the broker within {PUBACK_S:g} s; "
                    "is the broker overloaded or the connection down?"
                )

    # the network thread -------------------------------------------------------------------

    def _live(self) -> paho.Client:
        if self._client is None:
            raise FleetError("not connected to the broker: connect() first")
        return self._client

    def _copy(self) -> Fleet:
        out = self._fleet.copy()
        out.time = time.time()
        return out

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            return
        with self._cond:
            filters = list(self._filters)
        if filters:  # a reconnect: the clean session lost them
            logger.info("reconnected to the broker: subscribing again")
            client.subscribe([(f, 1) for f in filters])

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self._client is not None:  # not our own close()
            logger.warning("lost the broker connection (%s): reconnecting", reason)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        topic, payload = msg.topic, bytes(msg.payload)
        with self._cond:
            if topic == self.sync_topic:  # ours: not for the view nor the callbacks
                with contextlib.suppress(ValueError):
                    self._echoed = max(self._echoed, int(payload))
                self._cond.notify_all()
                return
            if msg.retain:
                self._last_retained = time.monotonic()
            fleet_view.apply(self._fleet, topic, payload)
            self._cond.notify_all()
        for callback in list(self._callbacks):
            try:
                callback(topic, payload)
            except Exception:  # a callback's bug must not kill the network thread
                logger.exception("fleet: a message callback failed on %s", topic)


def _connect(client: paho.Client, host: str, port: int) -> Optional[str]:
    """Connect ``client`` and start its thread; None once the broker accepted, else why not
    (the client is then stopped)."""
    answer: list[Any] = []
    done = threading.Event()
    accepted: Any = client.on_connect  # paho types it as a union of callback versions

    def first(c: paho.Client, u: Any, f: Any, reason: Any, p: Any) -> None:
        answer.append(reason)
        done.set()
        c.on_connect = accepted  # later (re)connects: the client's own handler
        if accepted is not None and not reason.is_failure:
            accepted(c, u, f, reason, p)

    client.on_connect = first
    try:
        client.connect(host, port, keepalive=KEEPALIVE_S)
    except (OSError, ValueError) as exc:  # socket.timeout, ssl.SSLError: OSErrors
        return _reason(exc)
    client.loop_start()
    if not done.wait(CONNECT_S * 2) or answer[0].is_failure:
        why = f"refused: {answer[0]}" if answer else "no answer to MQTT CONNECT"
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
        return why
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
