"""``[mqtt]``: the broker URL, session settings, credentials and TLS files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from sensorcast.agent.config.files import not_a_file, tls_file_errors
from sensorcast.agent.config.reader import Reader, Section
from sensorcast.agent.config.schema import MqttConfig
from sensorcast.agent.config.secrets import PASSWORD_KEYS, Secret, read_password

__all__ = ["MQTT_KEYS", "parse_mqtt"]

#: Keys ``[mqtt]`` takes.
MQTT_KEYS = (
    "url", "client_id", "topic_prefix", "qos", "protocol", "keepalive_s", "connect_timeout_s",
    "reconnect_min_s", "reconnect_max_s", "retain", "session_expiry_s", "username",
    *PASSWORD_KEYS, "ca_file", "cert_file", "key_file", "tls_insecure",
)  # fmt: skip

#: TLS files ``[mqtt]`` may name, in the order they are checked.
_TLS_FILES = ("ca_file", "cert_file", "key_file")


def parse_mqtt(r: Reader, raw: dict[str, Any], device_id: str, env: dict[str, str]) -> MqttConfig:
    """Validate ``[mqtt]`` (``raw``); ``env`` may override the URL, user and password."""
    r.unknown(raw, set(MQTT_KEYS), "mqtt")
    s = r.section(raw, "mqtt", MqttConfig)
    url = env.get("SENSORCAST_MQTT_URL") or s.get("url", str)
    host, port, tls = _parse_url(r, url)
    client_id = s.get("client_id", str, default=f"sensorcast-{device_id}")
    prefix = s.get("topic_prefix", str)
    if not prefix or any(ch in prefix for ch in "#+") or prefix.endswith("/"):
        r.error("mqtt.topic_prefix: must be non-empty, without '#', '+' or a trailing '/'")
    session = _session(r, s)
    username = env.get("SENSORCAST_MQTT_USERNAME") or s.get("username", str)
    password = read_password(r, raw, env)
    if password is not None and username is None:
        r.error("mqtt.username: required when a password is given")
    files = _tls_files(r, s, tls)
    return MqttConfig(
        host=host,
        port=port,
        url=url,
        client_id=client_id,
        topic_prefix=prefix,
        tls=tls,
        tls_insecure=s.get("tls_insecure", bool),
        username=username,
        password=Secret(password) if password is not None else None,
        password_env=raw["password_env"] if isinstance(raw.get("password_env"), str) else None,
        ca_file=files["ca_file"],
        cert_file=files["cert_file"],
        key_file=files["key_file"],
        **session,
    )


def _parse_url(r: Reader, url: str) -> tuple[str, int, bool]:
    """Host, port and TLS (``mqtts://``) of the broker URL."""
    default = MqttConfig.url  # what the host and port are when the URL is wrong
    parts = urlsplit(default)
    host, port, tls = parts.hostname or "", parts.port or 1883, False
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            r.error(f"mqtt.url: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}")
        elif parts.password is not None:
            r.error(
                "mqtt.url: do not put a password in the URL; use mqtt.password_file, "
                "mqtt.password_env or a systemd credential"
            )
        else:
            tls = parts.scheme == "mqtts"
            host = parts.hostname
            port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        r.error(f"mqtt.url: {exc}")
    return host, port, tls


def _session(r: Reader, s: Section) -> dict[str, Any]:
    """QoS, protocol and the session's timings, each checked as it is read, by field."""
    out: dict[str, Any] = {}
    for key, kind, ok, problem in _SESSION:
        out[key] = s.get(key, kind)
        if ok is not None and not ok(out):
            r.error(problem)
    return out


#: (key, type, check of the values read so far or None, message when the check fails).
_SESSION: tuple[tuple[str, type, Optional[Callable[[dict[str, Any]], bool]], str], ...] = (
    ("qos", int, lambda v: v["qos"] in (0, 1, 2), "mqtt.qos: must be 0, 1 or 2"),
    ("protocol", str, lambda v: v["protocol"] in ("3.1.1", "5"),
     "mqtt.protocol: must be '3.1.1' or '5'"),
    ("keepalive_s", int, lambda v: 5 <= v["keepalive_s"] <= 3600,
     "mqtt.keepalive_s: must be between 5 and 3600 seconds"),
    ("connect_timeout_s", float, lambda v: v["connect_timeout_s"] > 0,
     "mqtt.connect_timeout_s: must be > 0 seconds"),
    ("reconnect_min_s", float, None, ""),
    ("reconnect_max_s", float, lambda v: 0 < v["reconnect_min_s"] <= v["reconnect_max_s"],
     "mqtt.reconnect_min_s/reconnect_max_s: need 0 < min <= max seconds"),
    ("retain", bool, None, ""),
    ("session_expiry_s", int, lambda v: 0 <= v["session_expiry_s"] <= 0xFFFFFFFF,
     "mqtt.session_expiry_s: must be between 0 and 4294967295 seconds"),
)  # fmt: skip


def _tls_files(r: Reader, s: Section, tls: bool) -> dict[str, Optional[Path]]:
    """``ca_file``, ``cert_file`` and ``key_file``: each a regular file, and loadable."""
    files: dict[str, Optional[Path]] = {}
    files_ok = True
    for key in _TLS_FILES:
        value = s.get(key, str)
        files[key] = None
        if value is None:
            continue
        path = files[key] = r.resolve(value)
        problem = not_a_file(path)
        if problem:
            r.error(f"mqtt.{key}: {problem}")
            files_ok = False
        if not tls:
            r.error(f"mqtt.{key}: TLS files need an mqtts:// URL")
    if (files["cert_file"] is None) != (files["key_file"] is None):
        r.error("mqtt.cert_file/key_file: give both for a client certificate, or neither")
    elif tls and files_ok:
        # Load them as the connection will, so a wrong file is one line from `check` (and
        # from `run` before it starts) instead of a traceback deep in the MQTT client.
        for problem in tls_file_errors(files["ca_file"], files["cert_file"], files["key_file"]):
            r.error(problem)
    return files
