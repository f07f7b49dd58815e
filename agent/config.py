"""Configuration: read the TOML file once, validate all of it, return frozen objects.

Every problem is collected with its key path (``streams[1].model: file not
found``) and reported together in one :class:`ConfigError`.
"""

from __future__ import annotations

import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from agent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9/3.10 only
    import tomli as tomllib

__all__ = ["Config", "DeviceConfig", "MqttConfig", "StreamConfig", "load_config", "parse_config"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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


@dataclass(frozen=True)
class StreamConfig:
    """One ``[[streams]]`` entry."""

    name: str  #: Stream name used in topics.
    model: Path  #: Bundle path, resolved relative to the config file.
    input_topic: str  #: MQTT topic with JSON readings ``{"ts": s, "<feature>": n}``.
    features: Optional[tuple[str, ...]]  #: If set, must equal the model's features, in order.
    resample: str  #: ``mean`` (default) or ``last``: how readings in one period combine.
    max_gap_s: Optional[float]  #: Longest carry-forward, seconds; default 3 periods.
    close_delay_s: Optional[float]  #: Wait after a period ends before closing it, seconds.
    max_future_s: Optional[float]  #: How far ahead of the clock a timestamp may be, seconds.


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    path: Path
    device: DeviceConfig
    mqtt: MqttConfig
    streams: tuple[StreamConfig, ...]
    log_level: str


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
            self.errors.append(f"{full}: must be {_kind_name(kind)}, got {value!r}")
            return default
        return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        kind, kind.__name__
    )


def load_config(path: Path) -> Config:
    """Read and validate the TOML file at ``path``."""
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
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: Path) -> Config:
    """Validate parsed TOML ``data``; relative paths are resolved against ``path``'s folder."""
    c = _Collector()
    base = path.parent
    c.unknown(data, {"device", "mqtt", "streams", "log"}, "")

    device = c.table(data, "device", "device")
    c.unknown(device, {"id"}, "device")
    device_id = c.get(device, "id", str, "device", default=_default_device_id())
    if isinstance(device_id, str) and not _NAME.match(device_id):
        c.errors.append("device.id: use 1-64 letters, digits, '_' or '-'")

    mqtt = _parse_mqtt(c, c.table(data, "mqtt", "mqtt"), device_id)

    log = c.table(data, "log", "log")
    c.unknown(log, {"level"}, "log")
    level = c.get(log, "level", str, "log", default="info")
    if level not in ("debug", "info", "warning", "error"):
        c.errors.append("log.level: must be one of debug, info, warning, error")

    streams_raw = data.get("streams", [])
    streams: list[StreamConfig] = []
    if not isinstance(streams_raw, list) or not streams_raw:
        c.errors.append("streams: add at least one [[streams]] table")
        streams_raw = []
    names: set[str] = set()
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

    if c.errors:
        raise ConfigError(f"config {path}: " + "; ".join(c.errors))
    assert mqtt is not None
    return Config(
        path=path,
        device=DeviceConfig(id=device_id),
        mqtt=mqtt,
        streams=tuple(streams),
        log_level=level,
    )


def _parse_mqtt(c: _Collector, raw: dict[str, Any], device_id: str) -> Optional[MqttConfig]:
    c.unknown(
        raw,
        {"url", "client_id", "topic_prefix", "qos", "keepalive_s", "connect_timeout_s"},
        "mqtt",
    )
    url = c.get(raw, "url", str, "mqtt", default="mqtt://127.0.0.1:1883")
    host, port = "127.0.0.1", 1883
    try:
        parts = urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            c.errors.append(f"mqtt.url: use mqtt://HOST[:PORT], got {url!r}")
        else:
            host = parts.hostname
            port = parts.port or 1883
    except ValueError as exc:
        c.errors.append(f"mqtt.url: {exc}")
    client_id = c.get(raw, "client_id", str, "mqtt", default=f"sensorcast-{device_id}")
    prefix = c.get(raw, "topic_prefix", str, "mqtt", default="sensorcast")
    if not prefix or any(ch in prefix for ch in "#+") or prefix.endswith("/"):
        c.errors.append("mqtt.topic_prefix: must be non-empty, without '#', '+' or a trailing '/'")
    qos = c.get(raw, "qos", int, "mqtt", default=1)
    if qos not in (0, 1, 2):
        c.errors.append("mqtt.qos: must be 0, 1 or 2")
    keepalive = c.get(raw, "keepalive_s", int, "mqtt", default=30)
    if not 5 <= keepalive <= 3600:
        c.errors.append("mqtt.keepalive_s: must be between 5 and 3600 seconds")
    timeout = c.get(raw, "connect_timeout_s", float, "mqtt", default=10.0)
    if not timeout > 0:
        c.errors.append("mqtt.connect_timeout_s: must be > 0 seconds")
    return MqttConfig(
        host=host,
        port=port,
        url=url,
        client_id=client_id,
        topic_prefix=prefix,
        qos=qos,
        keepalive_s=keepalive,
        connect_timeout_s=timeout,
    )


def _parse_stream(
    c: _Collector, raw: dict[str, Any], where: str, base: Path
) -> Optional[StreamConfig]:
    c.unknown(
        raw,
        {
            "name",
            "model",
            "input_topic",
            "features",
            "resample",
            "max_gap_s",
            "close_delay_s",
            "max_future_s",
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
        if not model_path.is_file():
            c.errors.append(f"{where}.model: file not found: {model_path}")
    topic = c.get(raw, "input_topic", str, where, required=True)
    if isinstance(topic, str) and (not topic or "#" in topic or "+" in topic):
        c.errors.append(f"{where}.input_topic: must be a topic name without wildcards")
    features = c.get(raw, "features", list, where)
    if features is not None and (
        not features or not all(isinstance(f, str) and f for f in features)
    ):
        c.errors.append(f"{where}.features: must be a non-empty list of feature names")
        features = None
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
        **seconds,
    )


def _default_device_id() -> str:
    host = socket.gethostname().split(".")[0]
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", host)[:64]
    return cleaned or "sensorcast"
