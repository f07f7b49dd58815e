"""Configuration: read the TOML file once, validate all of it, return frozen objects.

Every problem is collected with its key path (``streams[1].model: file not
found``) and reported together in one :class:`ConfigError`.
"""

from __future__ import annotations

import glob
import math
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from agent.errors import ConfigError
from agent.filecheck import not_a_file, tls_file_errors

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9/3.10 only
    import tomli as tomllib

__all__ = [
    "Config",
    "DeviceConfig",
    "ModelsConfig",
    "MqttConfig",
    "Secret",
    "SourceConfig",
    "StreamConfig",
    "load_config",
    "parse_config",
]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: Largest value of any ``*_s`` key, seconds (about 31 years): larger ones overflow timers.
MAX_SECONDS = 1e9


class Secret:
    """A value that never shows in logs, reprs or error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one call that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class DeviceConfig:
    """``[device]``."""

    id: str  #: Device id used in topics; letters, digits, ``_`` and ``-``.


@dataclass(frozen=True)
class MqttConfig:
    """``[mqtt]``."""

    host: str
    port: int
    url: str  #: ``mqtt://host:port`` as given.
    client_id: str  #: Default ``sensorcast-<device id>``.
    topic_prefix: str  #: Default ``sensorcast``.
    qos: int  #: QoS of forecasts and status: 0, 1 (default) or 2.
    keepalive_s: int  #: MQTT keepalive, seconds.
    connect_timeout_s: float  #: How long start-up waits for the broker, seconds.
    tls: bool = False  #: ``mqtts://``: TLS, hostname verified unless ``tls_insecure``.
    ca_file: Optional[Path] = None  #: CA bundle for the broker's certificate (default: system).
    cert_file: Optional[Path] = None  #: Client certificate (PEM).
    key_file: Optional[Path] = None  #: Client certificate's key (PEM).
    tls_insecure: bool = False  #: Skip hostname verification (testing only).
    username: Optional[str] = None
    password: Optional[Secret] = None  #: Never printed.
    #: ``mqtt.password_env``: the variable's name, kept out of ``command`` sources' environment.
    password_env: Optional[str] = None
    protocol: str = "3.1.1"  #: ``3.1.1`` or ``5``.
    reconnect_min_s: float = 1.0  #: First reconnect delay; doubles up to ``reconnect_max_s``.
    reconnect_max_s: float = 60.0
    retain: bool = False  #: Retain each stream's last forecast on the broker.
    #: Persistent session: the broker keeps the agent's subscriptions and queues its input
    #: readings while it is away (reconnecting, restarting) for this long; 0: clean session.
    session_expiry_s: int = 86400


@dataclass(frozen=True)
class SourceConfig:
    """One ``[streams.inputs.<feature>]`` or ``[[streams.sources]]`` table."""

    type: str  #: mqtt, mqtt_value, file, command or stdin.
    where: str  #: Its key path, for messages.
    feature: Optional[str]  #: The feature it feeds, or None for whole-stream sources.
    topic: Optional[str] = None  #: mqtt / mqtt_value.
    path: Optional[Path] = None  #: file: path or glob (re-resolved at each read).
    parser: str = "number"  #: file: ``number`` or ``w1_slave``.
    scale: float = 1.0  #: file: value = raw * scale + offset.
    offset: float = 0.0
    command: tuple[str, ...] = ()  #: command: argv, no shell.
    format: str = "json"  #: command: ``number`` (one feature) or ``json``.
    interval_s: float = 10.0  #: file/command: seconds between reads.
    timeout_s: float = 5.0  #: command: kill after this many seconds.
    max_backoff_s: float = 60.0  #: file/command: longest retry delay while failing, seconds.


@dataclass(frozen=True)
class StreamConfig:
    """One ``[[streams]]`` entry."""

    name: str  #: Stream name used in topics.
    model: Path  #: Bundle path, resolved relative to the config file.
    input_topic: Optional[str]  #: MQTT topic with JSON readings ``{"ts": s, "<feature>": n}``.
    features: Optional[tuple[str, ...]]  #: If set, must equal the model's features, in order.
    resample: str  #: ``mean`` (default) or ``last``: how readings in one period combine.
    max_gap_s: Optional[float]  #: Longest carry-forward, seconds; default 3 periods.
    close_delay_s: Optional[float]  #: Wait after a period ends before closing it, seconds.
    max_future_s: Optional[float]  #: How far ahead of the clock a timestamp may be, seconds.
    sources: tuple[SourceConfig, ...] = ()  #: Inputs besides ``input_topic``.
    retain: Optional[bool] = None  #: Retain the last forecast (default: ``mqtt.retain``).
    rollout_steps: Optional[int] = None  #: Roll a single-step model out this many steps.
    #: Units of the targets (``{"temperature": "°C"}``), for Home Assistant.
    units: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HomeAssistantConfig:
    """``[homeassistant]``: MQTT discovery."""

    enabled: bool = True
    discovery_prefix: str = "homeassistant"  #: Where discovery configs go.
    status_topic: str = "homeassistant/status"  #: Home Assistant's birth/will topic.


@dataclass(frozen=True)
class QualityConfig:
    """``[quality]``: forecast-vs-actual telemetry and drift detection."""

    enabled: bool = True
    samples: int = 200  #: Residuals kept per forecast step for the rolling MAE.
    drift_factor: float = 2.0  #: Drift: rolling MAE above this many times the promised MAE ...
    drift_after_s: float = 3600.0  #: ... for this long, seconds.


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: counters and gauges over MQTT and, optionally, for Prometheus."""

    interval_s: float = 60.0  #: JSON on ``<prefix>/<device>/metrics`` this often; 0: never.
    prometheus_port: int = 0  #: Serve ``/metrics`` on this port; 0: no endpoint.
    prometheus_address: str = "127.0.0.1"  #: Interface for it; ``0.0.0.0`` for all.


@dataclass(frozen=True)
class UpdatesConfig:
    """``[updates]``: model updates over MQTT."""

    enabled: bool = True  #: Listen on ``model/set``; requests are refused unless opened below.
    max_bytes: int = 50 * 1024 * 1024  #: Largest bundle accepted, bytes.
    timeout_s: float = 60.0  #: Deadline for a whole download (connect to last byte), seconds.
    public_key: Optional[Path] = None  #: Ed25519 public key (PEM): only signed bundles then.
    #: Accept bundles without a signature (no ``public_key``): anyone who can publish to
    #: ``model/set`` then replaces the model. Off by default; ``check`` and the log warn.
    allow_unsigned: bool = False
    #: Accept a bundle whose manifest ``created`` is older than the running model's.
    allow_downgrade: bool = False

    @property
    def mode(self) -> str:
        """``signed`` (public_key), ``unsigned`` (allow_unsigned) or ``closed``."""
        if self.public_key is not None:
            return "signed"
        return "unsigned" if self.allow_unsigned else "closed"


def config_warnings(cfg: Config) -> list[str]:
    """Settings that work but leave the device open, one line each (``check`` and the log)."""
    out = []
    if cfg.updates.enabled and cfg.updates.mode == "unsigned":
        out.append(
            "updates.allow_unsigned = true: any client that can publish to "
            f"{cfg.mqtt.topic_prefix}/{cfg.device.id}/model/set or "
            f"{cfg.mqtt.topic_prefix}/fleet/model/set can replace the model; set "
            "updates.public_key to accept only bundles you signed"
        )
    return out


@dataclass(frozen=True)
class ModelsConfig:
    """``[models]``: limits on reading model bundles."""

    #: Largest model bundle read (start, ``info``, ``check``, hot reload, update), bytes.
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    path: Path
    device: DeviceConfig
    mqtt: MqttConfig
    streams: tuple[StreamConfig, ...]
    log_level: str
    state_dir: Path  #: Outbox and snapshots; ``$STATE_DIRECTORY`` under systemd.
    outbox_max_messages: int = 10_000  #: Outbox bound, messages.
    outbox_max_bytes: int = 8 * 1024 * 1024  #: Outbox bound, payload bytes.
    outbox_synchronous: str = "normal"  #: SQLite synchronous: off, normal, full.
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    quality: QualityConfig = QualityConfig()
    metrics: MetricsConfig = MetricsConfig()
    updates: UpdatesConfig = UpdatesConfig()
    models: ModelsConfig = ModelsConfig()


class _Collector:
    """Reads typed values out of parsed TOML and collects every problem."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def table(self, data: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.errors.append(f"{path}: must be a table")
            return {}
        return value

    def unknown(self, data: dict[str, Any], allowed: set[str], path: str) -> None:
        for key in data:
            if key not in allowed:
                hint = f"; allowed: {', '.join(sorted(allowed))}"
                self.errors.append(f"{_join(path, key)}: unknown key{hint}")

    def get(
        self,
        data: dict[str, Any],
        key: str,
        kind: type,
        path: str,
        default: Any = None,
        required: bool = False,
    ) -> Any:
        full = _join(path, key)
        if key not in data:
            if required:
                self.errors.append(f"{full}: required")
            return default
        value = data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            self.errors.append(f"{full}: must be {_kind_name(kind)}, got {_short_repr(value)}")
            return default
        if isinstance(value, float) and not math.isfinite(value):
            # TOML has nan and inf; no key means either (inf seconds overflows every timer,
            # nan compares false and silently turns a guard off).
            self.errors.append(f"{full}: must be a finite number, got {value!r}")
            return default
        if isinstance(value, float) and key.endswith("_s") and abs(value) > MAX_SECONDS:
            # Timers and waits overflow (OverflowError) past the platform's time_t.
            self.errors.append(f"{full}: must be at most {MAX_SECONDS:.0f} seconds")
            return default
        return value


_TABLES = ("device", "mqtt", "streams", "log", "state", "outbox", "homeassistant", "quality",
           "metrics", "updates", "models")  # fmt: skip


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _short_repr(value: object) -> str:
    """``repr(value)`` cut to a readable length (a key may hold a huge or deep array)."""
    try:
        text = repr(value)
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _kind_name(kind: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }.get(kind, kind.__name__)


def load_config(path: Path, env: Optional[dict[str, str]] = None) -> Config:
    """Read and validate the TOML file at ``path``.

    ``env`` (default ``os.environ``) supplies overrides for what a container
    sets: ``SENSORCAST_DEVICE_ID``, ``SENSORCAST_MQTT_URL``,
    ``SENSORCAST_MQTT_USERNAME``, ``SENSORCAST_MQTT_PASSWORD``, and
    ``CREDENTIALS_DIRECTORY`` for systemd credentials.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config {path}: file not found; pass --config PATH") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path}: cannot read it ({exc})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: not valid TOML ({exc})") from exc
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively: a crafted file of
        # 100000 '[' exhausts the stack. "from None": the chained stack is no use to anyone.
        raise ConfigError(
            f"config {path}: not valid TOML (arrays or tables nested too deeply)"
        ) from None
    return parse_config(data, path, dict(os.environ) if env is None else env)


def parse_config(data: dict[str, Any], path: Path, env: Optional[dict[str, str]] = None) -> Config:
    """Validate parsed TOML ``data``; relative paths are resolved against ``path``'s folder."""
    c = _Collector()
    env = {} if env is None else env
    base = path.parent
    c.unknown(data, set(_TABLES), "")

    device = c.table(data, "device", "device")
    c.unknown(device, {"id"}, "device")
    device_id = env.get("SENSORCAST_DEVICE_ID") or c.get(
        device, "id", str, "device", default=_default_device_id()
    )
    if isinstance(device_id, str) and not _NAME.match(device_id):
        c.errors.append("device.id: use 1-64 letters, digits, '_' or '-'")
    elif device_id == "fleet":
        c.errors.append(
            "device.id: 'fleet' is reserved (<prefix>/fleet/model/set updates every device); "
            "pick another id"
        )

    mqtt = _parse_mqtt(c, c.table(data, "mqtt", "mqtt"), device_id, base, env)

    log = c.table(data, "log", "log")
    c.unknown(log, {"level"}, "log")
    level = c.get(log, "level", str, "log", default="info")
    if level not in ("debug", "info", "warning", "error"):
        c.errors.append("log.level: must be one of debug, info, warning, error")

    state = c.table(data, "state", "state")
    c.unknown(state, {"dir"}, "state")
    state_text = c.get(state, "dir", str, "state")
    state_dir = _resolve(base, state_text) if state_text else _default_state_dir(env)
    outbox = c.table(data, "outbox", "outbox")
    c.unknown(outbox, {"max_messages", "max_bytes", "synchronous"}, "outbox")
    max_messages = c.get(outbox, "max_messages", int, "outbox", default=10_000)
    max_bytes = c.get(outbox, "max_bytes", int, "outbox", default=8 * 1024 * 1024)
    if not (max_messages >= 1 and max_bytes >= 1024):
        c.errors.append("outbox: max_messages must be >= 1 and max_bytes >= 1024")
    synchronous = c.get(outbox, "synchronous", str, "outbox", default="normal")
    if synchronous not in ("off", "normal", "full"):
        c.errors.append("outbox.synchronous: must be 'off', 'normal' or 'full'")

    ha = c.table(data, "homeassistant", "homeassistant")
    c.unknown(ha, {"enabled", "discovery_prefix", "status_topic"}, "homeassistant")
    ha_prefix = c.get(ha, "discovery_prefix", str, "homeassistant", default="homeassistant")
    _check_topic(c, ha_prefix, "homeassistant.discovery_prefix")
    ha_status = c.get(ha, "status_topic", str, "homeassistant", default=f"{ha_prefix}/status")
    _check_topic(c, ha_status, "homeassistant.status_topic")
    homeassistant = HomeAssistantConfig(
        enabled=c.get(ha, "enabled", bool, "homeassistant", default=True),
        discovery_prefix=ha_prefix,
        status_topic=ha_status,
    )

    q = c.table(data, "quality", "quality")
    c.unknown(q, {"enabled", "samples", "drift_factor", "drift_after_s"}, "quality")
    quality = QualityConfig(
        enabled=c.get(q, "enabled", bool, "quality", default=True),
        samples=c.get(q, "samples", int, "quality", default=200),
        drift_factor=c.get(q, "drift_factor", float, "quality", default=2.0),
        drift_after_s=c.get(q, "drift_after_s", float, "quality", default=3600.0),
    )
    if not 10 <= quality.samples <= 100_000:
        c.errors.append("quality.samples: must be between 10 and 100000")
    if not quality.drift_factor > 1 or not quality.drift_after_s >= 0:
        c.errors.append("quality.drift_factor must be > 1 and quality.drift_after_s >= 0")

    mt = c.table(data, "metrics", "metrics")
    c.unknown(mt, {"interval_s", "prometheus_port", "prometheus_address"}, "metrics")
    metrics = MetricsConfig(
        interval_s=c.get(mt, "interval_s", float, "metrics", default=60.0),
        prometheus_port=c.get(mt, "prometheus_port", int, "metrics", default=0),
        prometheus_address=c.get(mt, "prometheus_address", str, "metrics", default="127.0.0.1"),
    )
    if not (metrics.interval_s == 0 or metrics.interval_s >= 1):
        c.errors.append("metrics.interval_s: must be 0 (off) or at least 1 second")
    if not 0 <= metrics.prometheus_port <= 65535:
        c.errors.append("metrics.prometheus_port: must be a TCP port (1-65535), or 0 for none")

    up = c.table(data, "updates", "updates")
    c.unknown(up, {"enabled", "max_bytes", "timeout_s", "public_key", "allow_unsigned",
                   "allow_downgrade"}, "updates")  # fmt: skip
    key_text = c.get(up, "public_key", str, "updates")
    key_path = _resolve(base, key_text) if key_text else None
    if key_path is not None and not key_path.is_file():
        c.errors.append(f"updates.public_key: file not found: {key_path}")
    updates = UpdatesConfig(
        enabled=c.get(up, "enabled", bool, "updates", default=True),
        max_bytes=c.get(up, "max_bytes", int, "updates", default=50 * 1024 * 1024),
        timeout_s=c.get(up, "timeout_s", float, "updates", default=60.0),
        public_key=key_path,
        allow_unsigned=c.get(up, "allow_unsigned", bool, "updates", default=False),
        allow_downgrade=c.get(up, "allow_downgrade", bool, "updates", default=False),
    )
    if updates.max_bytes < 1024:
        c.errors.append("updates.max_bytes: must be at least 1024")
    if not (math.isfinite(updates.timeout_s) and updates.timeout_s > 0):
        c.errors.append("updates.timeout_s: must be a finite number of seconds > 0")
    if key_text and updates.allow_unsigned:
        c.errors.append(
            "updates.allow_unsigned: cannot be combined with updates.public_key (which accepts "
            "only signed bundles); remove one of them"
        )

    mo = c.table(data, "models", "models")
    c.unknown(mo, {"max_bytes"}, "models")
    models = ModelsConfig(
        max_bytes=c.get(mo, "max_bytes", int, "models", default=64 * 1024 * 1024),
    )
    if models.max_bytes < 1024 * 1024:
        c.errors.append("models.max_bytes: must be at least 1048576 (1 MiB)")

    streams_raw = data.get("streams", [])
    streams: list[StreamConfig] = []
    if not isinstance(streams_raw, list) or not streams_raw:
        c.errors.append("streams: add at least one [[streams]] table")
        streams_raw = []
    names: set[str] = set()
    stdin_at: Optional[str] = None  # the one stdin source allowed
    for i, raw in enumerate(streams_raw):
        where = f"streams[{i}]"
        if not isinstance(raw, dict):
            c.errors.append(f"{where}: must be a table")
            continue
        stream = _parse_stream(c, raw, where, base)
        if stream is None:
            continue
        if stream.name in names:
            c.errors.append(f"{where}.name: duplicate stream name {stream.name!r}")
        names.add(stream.name)
        streams.append(stream)
        for src in stream.sources:
            if src.type != "stdin":
                continue
            if stdin_at is not None:
                # One process has one stdin: a second reader would steal lines from the first.
                c.errors.append(
                    f"{src.where}.type: only one stdin source in the whole config "
                    f"(already {stdin_at}); feed other streams from mqtt, file or command"
                )
            else:
                stdin_at = src.where

    if c.errors:
        raise ConfigError(f"config {path}: " + "; ".join(c.errors))
    assert mqtt is not None
    return Config(
        path=path,
        device=DeviceConfig(id=device_id),
        mqtt=mqtt,
        streams=tuple(streams),
        log_level=level,
        state_dir=state_dir,
        outbox_max_messages=max_messages,
        outbox_max_bytes=max_bytes,
        outbox_synchronous=synchronous,
        homeassistant=homeassistant,
        quality=quality,
        metrics=metrics,
        updates=updates,
        models=models,
    )


def _parse_mqtt(
    c: _Collector, raw: dict[str, Any], device_id: str, base: Path, env: dict[str, str]
) -> Optional[MqttConfig]:
    c.unknown(raw, set(_MQTT_KEYS), "mqtt")
    url = env.get("SENSORCAST_MQTT_URL") or c.get(
        raw, "url", str, "mqtt", default="mqtt://127.0.0.1:1883"
    )
    host, port, tls = "127.0.0.1", 1883, False
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            c.errors.append(f"mqtt.url: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}")
        elif parts.password is not None:
            c.errors.append(
                "mqtt.url: do not put a password in the URL; use mqtt.password_file, "
                "mqtt.password_env or a systemd credential"
            )
        else:
            tls = parts.scheme == "mqtts"
            host = parts.hostname
            port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        c.errors.append(f"mqtt.url: {exc}")
    client_id = c.get(raw, "client_id", str, "mqtt", default=f"sensorcast-{device_id}")
    prefix = c.get(raw, "topic_prefix", str, "mqtt", default="sensorcast")
    if not prefix or any(ch in prefix for ch in "#+") or prefix.endswith("/"):
        c.errors.append("mqtt.topic_prefix: must be non-empty, without '#', '+' or a trailing '/'")
    qos = c.get(raw, "qos", int, "mqtt", default=1)
    if qos not in (0, 1, 2):
        c.errors.append("mqtt.qos: must be 0, 1 or 2")
    protocol = c.get(raw, "protocol", str, "mqtt", default="3.1.1")
    if protocol not in ("3.1.1", "5"):
        c.errors.append("mqtt.protocol: must be '3.1.1' or '5'")
    keepalive = c.get(raw, "keepalive_s", int, "mqtt", default=30)
    if not 5 <= keepalive <= 3600:
        c.errors.append("mqtt.keepalive_s: must be between 5 and 3600 seconds")
    timeout = c.get(raw, "connect_timeout_s", float, "mqtt", default=10.0)
    if not timeout > 0:
        c.errors.append("mqtt.connect_timeout_s: must be > 0 seconds")
    backoff_min = c.get(raw, "reconnect_min_s", float, "mqtt", default=1.0)
    backoff_max = c.get(raw, "reconnect_max_s", float, "mqtt", default=60.0)
    if not 0 < backoff_min <= backoff_max:
        c.errors.append("mqtt.reconnect_min_s/reconnect_max_s: need 0 < min <= max seconds")
    retain = c.get(raw, "retain", bool, "mqtt", default=False)
    expiry = c.get(raw, "session_expiry_s", int, "mqtt", default=86400)
    if not 0 <= expiry <= 0xFFFFFFFF:
        c.errors.append("mqtt.session_expiry_s: must be between 0 and 4294967295 seconds")

    username = env.get("SENSORCAST_MQTT_USERNAME") or c.get(raw, "username", str, "mqtt")
    password = _password(c, raw, base, env)
    if password is not None and username is None:
        c.errors.append("mqtt.username: required when a password is given")

    files: dict[str, Optional[Path]] = {}
    files_ok = True
    for key in ("ca_file", "cert_file", "key_file"):
        value = c.get(raw, key, str, "mqtt")
        files[key] = None
        if value is not None:
            path = _resolve(base, value)
            problem = not_a_file(path)
            if problem:
                c.errors.append(f"mqtt.{key}: {problem}")
                files_ok = False
            files[key] = path
            if not tls:
                c.errors.append(f"mqtt.{key}: TLS files need an mqtts:// URL")
    if (files["cert_file"] is None) != (files["key_file"] is None):
        c.errors.append("mqtt.cert_file/key_file: give both for a client certificate, or neither")
    elif tls and files_ok:
        # Load them as the connection will, so a wrong file is one line from `check` (and
        # from `run` before it starts) instead of a traceback deep in the MQTT client.
        c.errors.extend(tls_file_errors(files["ca_file"], files["cert_file"], files["key_file"]))
    insecure = c.get(raw, "tls_insecure", bool, "mqtt", default=False)
    return MqttConfig(
        host=host,
        port=port,
        url=url,
        client_id=client_id,
        topic_prefix=prefix,
        qos=qos,
        keepalive_s=keepalive,
        connect_timeout_s=timeout,
        tls=tls,
        ca_file=files["ca_file"],
        cert_file=files["cert_file"],
        key_file=files["key_file"],
        tls_insecure=insecure,
        username=username,
        password=Secret(password) if password is not None else None,
        password_env=raw["password_env"] if isinstance(raw.get("password_env"), str) else None,
        protocol=protocol,
        reconnect_min_s=backoff_min,
        reconnect_max_s=backoff_max,
        retain=retain,
        session_expiry_s=expiry,
    )


_MQTT_KEYS = (
    "url", "client_id", "topic_prefix", "qos", "protocol", "keepalive_s", "connect_timeout_s",
    "reconnect_min_s", "reconnect_max_s", "retain", "session_expiry_s", "username", "password",
    "password_file", "password_env", "password_credential", "ca_file", "cert_file", "key_file",
    "tls_insecure",
)  # fmt: skip


def _password(c: _Collector, raw: dict[str, Any], base: Path, env: dict[str, str]) -> Optional[str]:
    """The broker password from (first found): SENSORCAST_MQTT_PASSWORD, password_credential
    (systemd ``LoadCredential=``), password_file, password_env, password."""
    if env.get("SENSORCAST_MQTT_PASSWORD"):
        return env["SENSORCAST_MQTT_PASSWORD"]
    given = [k for k in ("password", "password_file", "password_env", "password_credential")
             if k in raw]  # fmt: skip
    if len(given) > 1:
        c.errors.append(f"mqtt: give only one of {', '.join(given)}")
        return None
    if not given:
        return None
    key = given[0]
    value: Optional[str] = c.get(raw, key, str, "mqtt")
    if value is None:
        return None
    if key == "password":
        return value
    if key == "password_env":
        if value not in env:
            c.errors.append(f"mqtt.password_env: environment variable {value} is not set")
            return None
        return env[value]
    if key == "password_credential":
        creds = env.get("CREDENTIALS_DIRECTORY")
        if not creds:
            c.errors.append(
                "mqtt.password_credential: $CREDENTIALS_DIRECTORY is not set (systemd sets it "
                "from LoadCredential=; outside the service point it at the file's folder, "
                "e.g. CREDENTIALS_DIRECTORY=/etc/sensorcast sensorcast check -c ...)"
            )
            return None
        path = Path(creds) / value
    else:
        path = _resolve(base, value)
    problem = not_a_file(path)
    if problem:  # /dev/zero or a FIFO would be read (or waited on) forever
        c.errors.append(f"mqtt.{key}: {problem}")
        return None
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_PASSWORD_BYTES + 1)
    except OSError as exc:
        c.errors.append(f"mqtt.{key}: cannot read {path} ({exc.strerror})")
        return None
    if len(data) > _MAX_PASSWORD_BYTES:
        c.errors.append(f"mqtt.{key}: {path} is larger than a password file can be")
        return None
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        c.errors.append(f"mqtt.{key}: {path} is not UTF-8 text")
        return None


#: An MQTT password is at most 65535 bytes (a two-byte length prefix).
_MAX_PASSWORD_BYTES = 65535


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _parse_stream(
    c: _Collector, raw: dict[str, Any], where: str, base: Path
) -> Optional[StreamConfig]:
    c.unknown(
        raw,
        {
            "name",
            "model",
            "input_topic",
            "inputs",
            "sources",
            "features",
            "resample",
            "max_gap_s",
            "close_delay_s",
            "max_future_s",
            "retain",
            "rollout_steps",
            "units",
        },
        where,
    )
    before = len(c.errors)
    name = c.get(raw, "name", str, where, required=True)
    if isinstance(name, str) and not _NAME.match(name):
        c.errors.append(f"{where}.name: use 1-64 letters, digits, '_' or '-'")
    model = c.get(raw, "model", str, where, required=True)
    model_path = None
    if isinstance(model, str):
        model_path = Path(model).expanduser()
        if not model_path.is_absolute():
            model_path = base / model_path
        problem = not_a_file(model_path)
        if problem:
            c.errors.append(f"{where}.model: {problem}")
    topic = c.get(raw, "input_topic", str, where)
    if isinstance(topic, str):
        _check_topic(c, topic, f"{where}.input_topic")
    sources = _parse_sources(c, raw, where, base)
    if topic is None and not sources:
        c.errors.append(
            f"{where}: no input; set input_topic, or add [streams.inputs.<feature>] "
            "or [[streams.sources]] tables"
        )
    retain = c.get(raw, "retain", bool, where)
    rollout = c.get(raw, "rollout_steps", int, where)
    if rollout is not None and not 1 <= rollout <= 10_000:
        c.errors.append(f"{where}.rollout_steps: must be between 1 and 10000")
    features = c.get(raw, "features", list, where)
    if features is not None and (
        not features or not all(isinstance(f, str) and f for f in features)
    ):
        c.errors.append(f"{where}.features: must be a non-empty list of feature names")
        features = None
    units = c.get(raw, "units", dict, where, default={})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in units.items()):
        c.errors.append(f"{where}.units: must map target names to unit strings")
        units = {}
    resample = c.get(raw, "resample", str, where, default="mean")
    if resample not in ("mean", "last"):
        c.errors.append(f"{where}.resample: must be 'mean' or 'last'")
    seconds = {}
    for key in ("max_gap_s", "close_delay_s", "max_future_s"):
        value = c.get(raw, key, float, where)
        if value is not None and value < 0:
            c.errors.append(f"{where}.{key}: must be >= 0 seconds")
        seconds[key] = value
    if len(c.errors) > before or model_path is None:
        return None
    return StreamConfig(
        name=name,
        model=model_path,
        input_topic=topic,
        features=tuple(features) if features is not None else None,
        resample=resample,
        sources=tuple(sources),
        retain=retain,
        rollout_steps=rollout,
        units=tuple(sorted(units.items())),
        **seconds,
    )


def _check_topic(c: _Collector, topic: str, where: str) -> None:
    if not topic or "#" in topic or "+" in topic:
        c.errors.append(f"{where}: must be a topic name without wildcards")


#: Keys each source type takes, besides ``type``.
_SOURCE_KEYS = {
    "mqtt": {"topic"},
    "mqtt_value": {"topic"},
    "file": {"path", "parser", "scale", "offset", "interval_s", "max_backoff_s"},
    "command": {"command", "format", "interval_s", "timeout_s", "max_backoff_s"},
    "stdin": set(),
}
#: Types allowed per feature ([streams.inputs.X]) and for whole streams ([[streams.sources]]).
_FEATURE_TYPES = ("file", "mqtt_value", "command")
_STREAM_TYPES = ("mqtt", "command", "stdin")


def _parse_sources(
    c: _Collector, raw: dict[str, Any], where: str, base: Path
) -> list[SourceConfig]:
    out: list[SourceConfig] = []
    inputs = c.table(raw, "inputs", f"{where}.inputs")
    for feature, table in inputs.items():
        here = f"{where}.inputs.{feature}"
        if not isinstance(table, dict):
            c.errors.append(f"{here}: must be a table")
            continue
        parsed = _parse_source(c, table, here, base, feature, _FEATURE_TYPES)
        if parsed is not None:
            out.append(parsed)
    listed = raw.get("sources", [])
    if not isinstance(listed, list):
        c.errors.append(f"{where}.sources: must be an array of tables ([[streams.sources]])")
        listed = []
    for i, table in enumerate(listed):
        here = f"{where}.sources[{i}]"
        if not isinstance(table, dict):
            c.errors.append(f"{here}: must be a table")
            continue
        parsed = _parse_source(c, table, here, base, None, _STREAM_TYPES)
        if parsed is not None:
            out.append(parsed)
    return out


def _parse_source(
    c: _Collector,
    raw: dict[str, Any],
    where: str,
    base: Path,
    feature: Optional[str],
    types: tuple[str, ...],
) -> Optional[SourceConfig]:
    before = len(c.errors)
    kind = c.get(raw, "type", str, where, required=True)
    if kind is None:
        return None
    if kind not in types:
        c.errors.append(f"{where}.type: must be one of {', '.join(types)}, not {kind!r}")
        return None
    c.unknown(raw, {"type", *_SOURCE_KEYS[kind]}, where)
    topic = c.get(raw, "topic", str, where, required=kind in ("mqtt", "mqtt_value"))
    if topic is not None:
        _check_topic(c, topic, f"{where}.topic")
    path = None
    if kind == "file":
        text = c.get(raw, "path", str, where, required=True)
        if text is not None:
            path = _resolve(base, text)
            matches = glob.glob(str(path)) if glob.has_magic(str(path)) else [str(path)]
            if not any(Path(m).is_file() for m in matches):
                c.errors.append(f"{where}.path: file not found: {path}")
    parser = c.get(raw, "parser", str, where, default="number")
    if parser not in ("number", "w1_slave"):
        c.errors.append(f"{where}.parser: must be 'number' or 'w1_slave'")
    command = c.get(raw, "command", list, where, required=kind == "command")
    if command is not None and (not command or not all(isinstance(a, str) for a in command)):
        c.errors.append(f'{where}.command: must be a list of strings, e.g. ["/usr/bin/x", "-j"]')
        command = None
    fmt = c.get(raw, "format", str, where, default="number" if feature else "json")
    if fmt not in ("number", "json") or (fmt == "number" and feature is None):
        c.errors.append(f"{where}.format: must be 'json' (or 'number' for one feature's input)")
    numbers = {}
    for key, default in (("scale", 1.0), ("offset", 0.0), ("interval_s", 10.0),
                         ("timeout_s", 5.0), ("max_backoff_s", 60.0)):  # fmt: skip
        numbers[key] = c.get(raw, key, float, where, default=default)
    for key in ("interval_s", "timeout_s", "max_backoff_s"):
        if not numbers[key] > 0:
            c.errors.append(f"{where}.{key}: must be > 0 seconds")
    if len(c.errors) > before:
        return None
    return SourceConfig(
        type=kind,
        where=where,
        feature=feature,
        topic=topic,
        path=path,
        parser=parser,
        command=tuple(command) if command else (),
        format=fmt,
        **numbers,
    )


def _default_state_dir(env: dict[str, str]) -> Path:
    """systemd's StateDirectory=, else the XDG state directory."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    xdg = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "sensorcast"


def _default_device_id() -> str:
    host = socket.gethostname().split(".")[0]
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", host)[:64]
    return cleaned or "sensorcast"
