"""``[mqtt]``: the broker URL (or URLs: a cluster behind several addresses), session settings,
credentials and TLS files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from sensorcast.agent.config.files import not_a_file, tls_file_errors
from sensorcast.agent.config.reader import Reader, Section
from sensorcast.agent.config.schema import MqttConfig
from sensorcast.agent.config.secrets import PASSWORD_KEYS, Secret, read_password

__all__ = ["MQTT_KEYS", "broker_urls", "host_port", "parse_mqtt"]

#: Keys ``[mqtt]`` takes.
MQTT_KEYS = (
    "url", "client_id", "topic_prefix", "qos", "protocol", "keepalive_s", "connect_timeout_s",
    "reconnect_min_s", "reconnect_max_s", "retain", "session_expiry_s", "username",
    *PASSWORD_KEYS, "ca_file", "cert_file", "key_file", "tls_insecure",
)  # fmt: skip

#: TLS files ``[mqtt]`` may name, in the order they are checked.
_TLS_FILES = ("ca_file", "cert_file", "key_file")

#: Entries of a ``url`` list that are not strings reported one by one, at most (then counted).
_BAD_ENTRIES_SHOWN = 3


def parse_mqtt(r: Reader, raw: dict[str, Any], device_id: str, env: dict[str, str]) -> MqttConfig:
    """Validate ``[mqtt]`` (``raw``); ``env`` may override the URL, user and password."""
    r.unknown(raw, set(MQTT_KEYS), "mqtt")
    s = r.section(raw, "mqtt", MqttConfig)
    urls = _read_urls(r, raw, env)
    brokers, tls = _parse_urls(r, urls)
    host, port = brokers[0]
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
        url=urls[0][1],
        brokers=brokers if len(brokers) > 1 else (),
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


def broker_urls(cfg: MqttConfig) -> tuple[str, ...]:
    """Every broker of ``cfg`` as ``mqtt[s]://host:port``, in the order they are tried."""
    scheme = "mqtts" if cfg.tls else "mqtt"
    brokers = cfg.brokers or ((cfg.host, cfg.port),)
    return tuple(f"{scheme}://{host_port(host, port)}" for host, port in brokers)


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (``[::1]:1883``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _read_urls(r: Reader, raw: dict[str, Any], env: dict[str, str]) -> list[tuple[str, str]]:
    """``mqtt.url`` as a non-empty list of ``(key path, URL)``: one string, a TOML list of
    strings, or ``SENSORCAST_MQTT_URL`` (comma-separated), which wins over the file."""
    text = env.get("SENSORCAST_MQTT_URL")
    value: Any = text.split(",") if text and "," in text else text or raw.get("url", MqttConfig.url)
    if isinstance(value, str):
        return [("mqtt.url", value)]
    if not isinstance(value, list) or not value:
        r.error(f"mqtt.url: must be a string or a non-empty list of strings, got {value!r:.60}")
        return [("mqtt.url", MqttConfig.url)]
    bad = [i for i, url in enumerate(value) if not isinstance(url, str)]
    for i in bad[:_BAD_ENTRIES_SHOWN]:
        r.error(f"mqtt.url[{i}]: must be a string, got {value[i]!r:.60}")
    if len(bad) > _BAD_ENTRIES_SHOWN:
        r.error(f"mqtt.url: {len(bad) - _BAD_ENTRIES_SHOWN} more entries are not strings")
    urls = [(f"mqtt.url[{i}]", url.strip()) for i, url in enumerate(value) if isinstance(url, str)]
    return urls or [("mqtt.url", MqttConfig.url)]


def _parse_urls(r: Reader, urls: list[tuple[str, str]]) -> tuple[tuple[tuple[str, int], ...], bool]:
    """Every broker's ``(host, port)``, in order, and whether they use TLS (``mqtts://``):
    all or none, since the TLS settings are shared; each broker once."""
    brokers: list[tuple[str, int]] = []
    seen: dict[tuple[str, int], str] = {}  # (host in lower case, port) -> its key path
    schemes: set[bool] = set()  # TLS or not, of the well-formed URLs
    for key, url in urls:
        errors = len(r.errors)
        host, port, tls = _parse_url(r, url, key)
        brokers.append((host, port))
        if len(r.errors) > errors:
            continue  # a wrong URL's host and port are placeholders: no duplicate of anything
        schemes.add(tls)
        first = seen.setdefault((host.lower(), port), key)
        if first != key:
            r.error(f"{key}: {host}:{port} is {first} again; list each broker once")
    if len(schemes) > 1:
        r.error(
            "mqtt.url: mixes mqtt:// and mqtts:// brokers; the TLS settings are shared, "
            "so use mqtts:// for every broker (or mqtt:// for every one)"
        )
    return tuple(brokers), schemes == {True}


def _parse_url(r: Reader, url: str, key: str) -> tuple[str, int, bool]:
    """Host, port and TLS (``mqtts://``) of one broker URL; ``key`` names it in errors."""
    default = MqttConfig.url  # what the host and port are when the URL is wrong
    parts = urlsplit(default)
    host, port, tls = parts.hostname or "", parts.port or 1883, False
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            r.error(f"{key}: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}")
        elif parts.password is not None:
            r.error(
                f"{key}: do not put a password in the URL; use mqtt.password_file, "
                "mqtt.password_env or a systemd credential"
            )
        else:
            tls = parts.scheme == "mqtts"
            host = parts.hostname
            port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        r.error(f"{key}: {exc}")
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
