"""Home Assistant MQTT discovery: each stream's forecast appears as sensors, no YAML needed.

For every stream and target, two sensors: the next step and the end of the horizon, read
from the stream's forecast topic with a ``value_template``; the forecast's other fields are
attributes (``out_of_range`` among them: true when the window was outside the range the
model was verified on). They belong to one device (the agent), use the agent's retained
availability topic, and expire (show as unavailable) when no forecast came for a few
periods. Configs are published retained to
``<discovery prefix>/sensor/<node>/<object>/config`` after every connect and whenever Home
Assistant announces itself ``online`` on its status topic.
See https://www.home-assistant.io/integrations/sensor.mqtt/ and .../mqtt/#mqtt-discovery.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sensorcast.agent import __version__
from sensorcast.agent.config import Config
from sensorcast.agent.publish.topics import Topics, discovery_topic

__all__ = ["discovery_messages", "expire_after_s"]

#: Target names that are Home Assistant sensor device classes (used only with a unit).
DEVICE_CLASSES = {
    "temperature", "humidity", "pressure", "atmospheric_pressure", "illuminance", "power",
    "energy", "voltage", "current", "carbon_dioxide", "carbon_monoxide", "pm25", "pm10", "pm1",
    "volatile_organic_compounds", "moisture", "wind_speed", "precipitation", "irradiance",
    "frequency", "gas", "water", "battery", "signal_strength", "sound_pressure", "speed",
}  # fmt: skip
#: Common aliases of those names.
ALIASES = {"co2": "carbon_dioxide", "co": "carbon_monoxide", "lux": "illuminance"}


def expire_after_s(period_s: float) -> int:
    """A forecast is stale when none came for three periods (at least a minute)."""
    return max(60, math.ceil(3 * period_s))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def discovery_messages(
    cfg: Config, streams: list[tuple[str, Any]], status_topic: str
) -> list[tuple[str, bytes]]:
    """``(topic, retained payload)`` for every sensor of ``streams`` (name, manifest) pairs.

    With discovery disabled, empty payloads: they remove sensors published before.
    """
    ha, device = cfg.homeassistant, cfg.device.id
    node = f"sensorcast_{device}"
    device_info = {
        "identifiers": [node],
        "name": f"sensorcast {device}",
        "manufacturer": "sensorcast",
        "model": "sensorcast agent",
        "sw_version": __version__,
    }
    out: list[tuple[str, bytes]] = []
    for name, manifest in streams:
        stream_cfg = next(s for s in cfg.streams if s.name == name)
        units = dict(stream_cfg.units)
        state_topic = Topics(cfg.mqtt.topic_prefix, device).forecast(name)
        ahead = _duration(manifest.horizon * manifest.period_s)
        for j, target in enumerate(manifest.targets):
            for which, step, label in (
                ("next", 0, "next"),
                ("end", -1, f"in {ahead}"),
            ):
                object_id = f"{name}_{target}_{which}"
                topic = discovery_topic(ha.discovery_prefix, node, object_id)
                if not ha.enabled:
                    out.append((topic, b""))
                    continue
                config: dict[str, Any] = {
                    "name": f"{name} {target} forecast {label}",
                    "unique_id": f"{node}_{object_id}",
                    "object_id": f"{node}_{object_id}",
                    "state_topic": state_topic,
                    # value_json.values would be the dict method: index by key
                    "value_template": f"{{{{ value_json['values'][{step}][{j}] | round(3) }}}}",
                    "json_attributes_topic": state_topic,
                    "json_attributes_template": (
                        "{{ {'model': value_json.model, 'window_end': value_json.window_end, "
                        f"'at': value_json.steps[{step}], 'steps': value_json.steps, "
                        f"'values': value_json['values'] | map(attribute={j}) | list, "
                        # get: a retained forecast from an agent before out_of_range existed
                        "'out_of_range': value_json.get('out_of_range', false)} "
                        "| tojson }}"
                    ),
                    "state_class": "measurement",
                    "expire_after": expire_after_s(manifest.period_s),
                    "availability_topic": status_topic,
                    "payload_available": "online",
                    "payload_not_available": "offline",
                    "qos": cfg.mqtt.qos,
                    "device": device_info,
                    "origin": {
                        "name": "sensorcast",
                        "sw_version": __version__,
                        "support_url": "https://github.com/sensorcast/sensorcast",
                    },
                    "icon": "mdi:chart-bell-curve-cumulative",
                }
                unit = units.get(target)
                if unit is not None:
                    config["unit_of_measurement"] = unit
                    device_class = ALIASES.get(target.lower(), target.lower())
                    if device_class in DEVICE_CLASSES:
                        config["device_class"] = device_class
                out.append((topic, json.dumps(config, ensure_ascii=False).encode()))
    return out
