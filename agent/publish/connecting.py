"""How the agent's paho clients connect: credentials, TLS and the TCP connect limit from the
config, and the MQTT 3.1.1 probe that tells a 3.1.1-only broker from a silent one."""

from __future__ import annotations

import contextlib
import ssl
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sensorcast.agent.config import MqttConfig

__all__ = ["TCP_CONNECT_S", "answers_mqtt311", "configure"]

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


def answers_mqtt311(cfg: MqttConfig) -> bool:
    """Whether the broker answers an MQTT 3.1.1 CONNECT (with any CONNACK, a refusal
    too) within the TCP connect limit. A clean session of its own, no will."""
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
        probe.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        while not answered and probe.socket() is not None and time.monotonic() < deadline:
            probe.loop(0.1)
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return False
    finally:
        with contextlib.suppress(Exception):
            probe.disconnect()
    return bool(answered)
