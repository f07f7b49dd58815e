"""Read the TOML file once, validate all of it, return one frozen :class:`Config`.

Every problem is collected with its key path (``streams[1].model: file not found``) and
reported together in one :class:`ConfigError`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

from sensorcast.agent.config.mqtt import parse_mqtt
from sensorcast.agent.config.reader import Reader
from sensorcast.agent.config.schema import Config
from sensorcast.agent.config.sections import (
    parse_device,
    parse_general,
    parse_homeassistant,
    parse_metrics,
    parse_models,
    parse_quality,
    parse_updates,
)
from sensorcast.agent.config.streams import parse_streams
from sensorcast.agent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9/3.10 only
    import tomli as tomllib

__all__ = ["TABLES", "config_warnings", "load_config", "parse_config"]

#: The top-level tables of the file.
TABLES = ("device", "mqtt", "streams", "log", "state", "outbox", "homeassistant", "quality",
          "metrics", "updates", "models")  # fmt: skip


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
    r = Reader(path.parent)
    env = {} if env is None else env
    r.unknown(data, set(TABLES), "")
    device = parse_device(r, data, env)
    mqtt = parse_mqtt(r, r.table(data, "mqtt", "mqtt"), device.id, env)
    general = parse_general(r, data, env)
    homeassistant = parse_homeassistant(r, data)
    quality = parse_quality(r, data)
    metrics = parse_metrics(r, data)
    updates = parse_updates(r, data)
    models = parse_models(r, data)
    streams = parse_streams(r, data)
    if r.errors:
        raise ConfigError(f"config {path}: " + "; ".join(r.errors))
    return Config(
        path=path,
        device=device,
        mqtt=mqtt,
        streams=tuple(streams),
        homeassistant=homeassistant,
        quality=quality,
        metrics=metrics,
        updates=updates,
        models=models,
        **general,
    )


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
