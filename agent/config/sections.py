"""The small tables: ``[device]``, ``[log]``, ``[state]``, ``[outbox]``, ``[homeassistant]``,
``[quality]``, ``[metrics]``, ``[updates]`` and ``[models]``."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

from sensorcast.agent.config.reader import NAME, Reader
from sensorcast.agent.config.schema import (
    Config,
    DeviceConfig,
    HomeAssistantConfig,
    MetricsConfig,
    ModelsConfig,
    QualityConfig,
    UpdatesConfig,
)

__all__ = [
    "parse_device",
    "parse_general",
    "parse_homeassistant",
    "parse_metrics",
    "parse_models",
    "parse_quality",
    "parse_updates",
]


def parse_device(r: Reader, data: dict[str, Any], env: dict[str, str]) -> DeviceConfig:
    """``[device]``; ``SENSORCAST_DEVICE_ID`` overrides ``id``, the host name is its default."""
    device = r.table(data, "device", "device")
    r.unknown(device, {"id", "site"}, "device")
    device_id = env.get("SENSORCAST_DEVICE_ID") or r.get(
        device, "id", str, "device", default=_default_device_id()
    )
    if isinstance(device_id, str) and not NAME.match(device_id):
        r.error("device.id: use 1-64 letters, digits, '_' or '-'")
    elif device_id == "fleet":
        r.error(
            "device.id: 'fleet' is reserved (<prefix>/fleet/model/set updates every device); "
            "pick another id"
        )
    site = r.get(device, "site", str, "device", default=None)
    if isinstance(site, str) and not NAME.match(site):
        r.error("device.site: use 1-64 letters, digits, '_' or '-'")
    return DeviceConfig(id=device_id, site=site)


def parse_general(r: Reader, data: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """``[log]``, ``[state]`` and ``[outbox]``: the :class:`Config` fields they fill."""
    log = r.table(data, "log", "log")
    r.unknown(log, {"level"}, "log")
    level = r.section(log, "log", Config, "log_").get("level", str)
    if level not in ("debug", "info", "warning", "error"):
        r.error("log.level: must be one of debug, info, warning, error")
    state = r.table(data, "state", "state")
    r.unknown(state, {"dir"}, "state")
    state_text = r.get(state, "dir", str, "state")
    state_dir = r.resolve(state_text) if state_text else _default_state_dir(env)
    outbox = r.table(data, "outbox", "outbox")
    r.unknown(outbox, {"max_messages", "max_bytes", "synchronous"}, "outbox")
    o = r.section(outbox, "outbox", Config, "outbox_")
    max_messages = o.get("max_messages", int)
    max_bytes = o.get("max_bytes", int)
    if not (max_messages >= 1 and max_bytes >= 1024):
        r.error("outbox: max_messages must be >= 1 and max_bytes >= 1024")
    synchronous = o.get("synchronous", str)
    if synchronous not in ("off", "normal", "full"):
        r.error("outbox.synchronous: must be 'off', 'normal' or 'full'")
    return {
        "log_level": level,
        "state_dir": state_dir,
        "outbox_max_messages": max_messages,
        "outbox_max_bytes": max_bytes,
        "outbox_synchronous": synchronous,
    }


def parse_homeassistant(r: Reader, data: dict[str, Any]) -> HomeAssistantConfig:
    """``[homeassistant]``: discovery and Home Assistant's status topic."""
    ha = r.table(data, "homeassistant", "homeassistant")
    r.unknown(ha, {"enabled", "discovery_prefix", "status_topic"}, "homeassistant")
    s = r.section(ha, "homeassistant", HomeAssistantConfig)
    prefix = s.get("discovery_prefix", str)
    r.check_topic(prefix, "homeassistant.discovery_prefix")
    status = s.get("status_topic", str, default=f"{prefix}/status")
    r.check_topic(status, "homeassistant.status_topic")
    return HomeAssistantConfig(
        enabled=s.get("enabled", bool), discovery_prefix=prefix, status_topic=status
    )


def parse_quality(r: Reader, data: dict[str, Any]) -> QualityConfig:
    """``[quality]``: the rolling error window and drift detection."""
    q = r.table(data, "quality", "quality")
    keys = {
        "enabled", "samples", "drift_factor", "drift_after_s", "min_samples", "anomaly",
        "anomaly_level", "anomaly_periods", "stuck_periods", "dropout_periods", "interval_s",
    }  # fmt: skip
    r.unknown(q, keys, "quality")
    s = r.section(q, "quality", QualityConfig)
    quality = QualityConfig(
        enabled=s.get("enabled", bool),
        samples=s.get("samples", int),
        drift_factor=s.get("drift_factor", float),
        drift_after_s=s.get("drift_after_s", float),
        min_samples=s.get("min_samples", int),
        anomaly=s.get("anomaly", bool),
        anomaly_level=s.get("anomaly_level", float),
        anomaly_periods=s.get("anomaly_periods", int),
        stuck_periods=s.get("stuck_periods", int),
        dropout_periods=s.get("dropout_periods", int),
        interval_s=s.get("interval_s", float),
    )
    if not 0.1 <= quality.interval_s <= 86400:
        r.error("quality.interval_s: must be between 0.1 and 86400 seconds")
    if not 1 <= quality.min_samples <= quality.samples:
        r.error("quality.min_samples: must be between 1 and quality.samples")
    if not 0.9 <= quality.anomaly_level <= 0.9999:
        r.error("quality.anomaly_level: must be between 0.9 and 0.9999")
    for key in ("anomaly_periods", "stuck_periods", "dropout_periods"):
        if not 1 <= getattr(quality, key) <= 10_000:
            r.error(f"quality.{key}: must be between 1 and 10000 periods")
    if not 10 <= quality.samples <= 100_000:
        r.error("quality.samples: must be between 10 and 100000")
    if not quality.drift_factor > 1 or not quality.drift_after_s >= 0:
        r.error("quality.drift_factor must be > 1 and quality.drift_after_s >= 0")
    return quality


def parse_metrics(r: Reader, data: dict[str, Any]) -> MetricsConfig:
    """``[metrics]``: the MQTT interval and the Prometheus endpoint."""
    mt = r.table(data, "metrics", "metrics")
    r.unknown(mt, {"interval_s", "prometheus_port", "prometheus_address"}, "metrics")
    s = r.section(mt, "metrics", MetricsConfig)
    metrics = MetricsConfig(
        interval_s=s.get("interval_s", float),
        prometheus_port=s.get("prometheus_port", int),
        prometheus_address=s.get("prometheus_address", str),
    )
    if not (metrics.interval_s == 0 or metrics.interval_s >= 1):
        r.error("metrics.interval_s: must be 0 (off) or at least 1 second")
    if not 0 <= metrics.prometheus_port <= 65535:
        r.error("metrics.prometheus_port: must be a TCP port (1-65535), or 0 for none")
    return metrics


def parse_updates(r: Reader, data: dict[str, Any]) -> UpdatesConfig:
    """``[updates]``: who may replace the model over MQTT, and download limits."""
    up = r.table(data, "updates", "updates")
    r.unknown(up, {"enabled", "max_bytes", "timeout_s", "public_key", "allow_unsigned",
                   "allow_downgrade"}, "updates")  # fmt: skip
    s = r.section(up, "updates", UpdatesConfig)
    key_text = s.get("public_key", str)
    key_path = r.resolve(key_text) if key_text else None
    if key_path is not None and not key_path.is_file():
        r.error(f"updates.public_key: file not found: {key_path}")
    updates = UpdatesConfig(
        enabled=s.get("enabled", bool),
        max_bytes=s.get("max_bytes", int),
        timeout_s=s.get("timeout_s", float),
        public_key=key_path,
        allow_unsigned=s.get("allow_unsigned", bool),
        allow_downgrade=s.get("allow_downgrade", bool),
    )
    if updates.max_bytes < 1024:
        r.error("updates.max_bytes: must be at least 1024")
    if not updates.timeout_s > 0:  # finite: the reader refuses nan and inf
        r.error("updates.timeout_s: must be a finite number of seconds > 0")
    if key_text and updates.allow_unsigned:
        r.error(
            "updates.allow_unsigned: cannot be combined with updates.public_key (which accepts "
            "only signed bundles); remove one of them"
        )
    return updates


def parse_models(r: Reader, data: dict[str, Any]) -> ModelsConfig:
    """``[models]``: the largest bundle read."""
    mo = r.table(data, "models", "models")
    r.unknown(mo, {"max_bytes"}, "models")
    models = ModelsConfig(max_bytes=r.section(mo, "models", ModelsConfig).get("max_bytes", int))
    if models.max_bytes < 1024 * 1024:
        r.error("models.max_bytes: must be at least 1048576 (1 MiB)")
    return models


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
