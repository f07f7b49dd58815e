"""How the agent's paho clients connect: credentials, TLS and the TCP connect limit from the
config, opening a connection to one broker of ``mqtt.url``, and the MQTT 3.1.1 probe that
tells a 3.1.1-only broker from a silent one."""

from __future__ import annotations

import contextlib
import ssl
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sensorcast.agent.config import MqttConfig
from sensorcast.agent.errors import PublishError
from sensorcast.agent.publish.refusals import unanswered

__all__ = [
    "TCP_CONNECT_S",
    "aim",
    "answers_mqtt311",
    "configure",
    "open_connection",
    "unanswered_error",
]

TCP_CONNECT_S = 5.0  #: Longest a reconnect attempt may hold the loop (unreachable host).


def configure(client: paho.Client, cfg: MqttConfig) -> None:
    """Credentials, TLS and the TCP connect limit, as the config says."""
    client.connect_timeout = min(cfg.connect_timeout_s, TCP_CONNECT_S)
    if cfg.username is not None:
        password = cfg.password.reveal() if cfg.password is not None else None
        client.username_pw_set(cfg.username, password)
    if cfg.tls:
        client.tls_set(
            ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
            certfile=str(cfg.cert_file) if cfg.cert_file else None,
            keyfile=str(cfg.key_file) if cfg.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        # Hostname verification stays on unless the user turned it off explicitly.
        client.tls_insecure_set(cfg.tls_insecure)


def aim(client: paho.Client, cfg: MqttConfig, host: str, port: int, props: Any) -> None:
    """Point ``client`` at the broker ``host``:``port`` (``props``: the MQTT 5 CONNECT
    properties, None in 3.1.1) without connecting yet.

    paho's ``connect_async``: it closes the socket the client has (a silent broker's too,
    without a disconnect callback) and keeps the session's state: the client id, messages
    in flight (sent again, to this broker, after the next CONNACK) and the clean-start
    choice, which stays "resume" for a persistent session on every broker.
    """
    if props is not None:  # MQTT 5
        client.connect_async(
            host,
            port,
            keepalive=cfg.keepalive_s,
            clean_start=cfg.session_expiry_s == 0,
            properties=props,
        )
    else:  # 3.1.1: the session's cleanliness was fixed when the client was made
        client.connect_async(host, port, keepalive=cfg.keepalive_s)


def open_connection(
    client: paho.Client, cfg: MqttConfig, host: str, port: int, props: Any, where: str
) -> None:
    """The TCP (and TLS) connect to ``host``:``port`` and the CONNECT packet (at most
    :data:`TCP_CONNECT_S`); a failure as a one-line :class:`PublishError` naming ``where``."""
    try:
        aim(client, cfg, host, port, props)
        client.reconnect()
    except ssl.SSLError as exc:
        detail = getattr(exc, "verify_message", None) or exc.reason or exc
        raise PublishError(
            f"TLS with {where} failed: {detail}; check mqtt.ca_file, "
            "mqtt.cert_file and mqtt.key_file, and that the broker's certificate names the host"
        ) from exc
    except OSError as exc:
        raise PublishError(
            f"cannot reach {where}: {exc.strerror or exc}; check the URL and that the broker runs"
        ) from exc


def unanswered_error(
    client: paho.Client, cfg: MqttConfig, host: str, port: int, where: str
) -> PublishError:
    """Disconnect ``client`` after no CONNACK came from ``host``:``port`` (``where``), and
    the error that says the likely why."""
    closed = client.socket() is None
    client.disconnect()
    # A 3.1.1-only broker may not answer an MQTT 5 CONNECT at all (amqtt reads its
    # properties as the payload and waits for more), or hang up: ask it in 3.1.1.
    mqtt311_only = cfg.protocol == "5" and answers_mqtt311(cfg, host, port)
    return unanswered(where, cfg, closed=closed, mqtt311_only=mqtt311_only)


def answers_mqtt311(cfg: MqttConfig, host: str, port: int) -> bool:
    """Whether the broker at ``host``:``port`` answers an MQTT 3.1.1 CONNECT (with any
    CONNACK, a refusal too) within the TCP connect limit. A clean session of its own, no
    will."""
    answered: list[bool] = []
    probe = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{cfg.client_id}-probe",
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    configure(probe, cfg)
    probe.on_connect = lambda *_args: answered.append(True)
    deadline = time.monotonic() + TCP_CONNECT_S
    try:
        probe.connect(host, port, keepalive=cfg.keepalive_s)
        while not answered and probe.socket() is not None and time.monotonic() < deadline:
            probe.loop(0.1)
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return False
    finally:
        with contextlib.suppress(Exception):
            probe.disconnect()
    return bool(answered)
