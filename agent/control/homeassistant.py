"""Home Assistant MQTT discovery: each stream's forecast appears as sensors, no YAML needed.

For every stream and target, two sensors: the next step and the end of the horizon, read
from the stream's forecast topic with a ``value_template``; the forecast's other fields are
attributes: the prediction interval at that step (``lower``, ``upper``, ``level``) and at
every step (``lower_by_step``, ``upper_by_step``, beside ``values`` and ``steps``), the
times in Unix seconds and ISO-8601 (``window_end_iso``, ``at_iso``), ``fallback`` and
``out_of_range`` (true when the window was outside the range the model was verified on).
Besides them, per stream, an anomaly ``binary_sensor`` and diagnostic entities
(:mod:`~sensorcast.agent.control.ha_entities`). They belong to one device (the agent), use
the agent's retained availability topic, and the forecast sensors expire (show as
unavailable) when no forecast came for a few periods. Configs are published retained to
``<discovery prefix>/<component>/<node>/<object>/config`` after every connect and whenever
Home Assistant announces itself ``online`` on its status topic; with discovery disabled,
empty retained payloads remove every one of them.
See https://www.home-assistant.io/integrations/sensor.mqtt/ and .../mqtt/#mqtt-discovery.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sensorcast.agent import __version__
from sensorcast.agent.config import Config
from sensorcast.agent.control.ha_entities import Entity, StreamTopics, diagnostic_entities
from sensorcast.agent.control.ha_units import NOT_MEASUREMENT, device_class
from sensorcast.agent.publish.topics import Topics, discovery_topic

__all__ = ["discovery_messages", "expire_after_s"]

_ORIGIN = {
    "name": "sensorcast",
    "sw_version": __version__,
    "support_url": "https://github.com/sensorcast/sensorcast",
}


def expire_after_s(period_s: float) -> int:
    """A forecast is stale when none came for three periods (at least a minute)."""
    return max(60, math.ceil(3 * period_s))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _attributes_template(step: int, j: int) -> str:
    """The forecast's fields for target ``j`` at step ``step`` (0 or -1) as attributes.

    ``get`` for the keys a retained forecast from an older agent may lack; ``lower`` and
    ``upper`` are null while no interval is known.
    """
    return (
        "{% set lo = value_json.get('lower') %}{% set hi = value_json.get('upper') %}"
        "{% set at = value_json.steps[" + str(step) + "] %}"
        "{{ {'model': value_json.model, 'window_end': value_json.window_end, "
        "'window_end_iso': value_json.window_end | timestamp_utc(none), "
        "'at': at, 'at_iso': at | timestamp_utc(none), 'steps': value_json.steps, "
        # value_json.values would be the dict method: index by key
        f"'values': value_json['values'] | map(attribute={j}) | list, "
        "'level': value_json.get('level'), "
        f"'lower': lo[{step}][{j}] if lo else none, 'upper': hi[{step}][{j}] if hi else none, "
        f"'lower_by_step': lo | map(attribute={j}) | list if lo else none, "
        f"'upper_by_step': hi | map(attribute={j}) | list if hi else none, "
        "'fallback': value_json.get('fallback'), "
        "'out_of_range': value_json.get('out_of_range', false)} | tojson }}"
    )


def _forecast_sensors(cfg: Config, name: str, manifest: Any, state_topic: str) -> list[Entity]:
    """The next-step and end-of-horizon sensors of each target of one stream."""
    units = dict(next(s for s in cfg.streams if s.name == name).units)
    ahead = _duration(manifest.horizon * manifest.period_s)
    out: list[Entity] = []
    for j, target in enumerate(manifest.targets):
        for which, step, label in (("next", 0, "next"), ("end", -1, f"in {ahead}")):
            config: dict[str, Any] = {
                "name": f"{name} {target} forecast {label}",
                "state_topic": state_topic,
                "value_template": f"{{{{ value_json['values'][{step}][{j}] | round(3) }}}}",
                "json_attributes_topic": state_topic,
                "json_attributes_template": _attributes_template(step, j),
                "state_class": "measurement",
                "expire_after": expire_after_s(manifest.period_s),
                "icon": "mdi:chart-bell-curve-cumulative",
            }
            unit, cls = units.get(target), device_class(target)
            if unit is not None:
                config["unit_of_measurement"] = unit
                if cls is not None:
                    config["device_class"] = cls
                    if cls in NOT_MEASUREMENT:  # Home Assistant wants a meter's total there
                        del config["state_class"]
            out.append(Entity("sensor", f"{name}_{target}_{which}", config))
    return out


def _stream_topics(cfg: Config, name: str, manifest: Any) -> StreamTopics:
    topics = Topics(cfg.mqtt.topic_prefix, cfg.device.id)
    q = cfg.quality
    # as QualityTracker.for_stream / AnomalyDetector.for_stream decide
    tracked = q.enabled and set(manifest.targets) <= set(manifest.features)
    observed = any(t in manifest.features for t in manifest.targets)
    return StreamTopics(
        name=name,
        forecast=topics.forecast(name),
        quality=topics.quality(name),
        anomaly=topics.anomaly(name),
        has_quality=tracked,
        has_anomaly=q.enabled and q.anomaly and observed,
    )


def discovery_messages(
    cfg: Config, streams: list[tuple[str, Any]], status_topic: str
) -> list[tuple[str, bytes]]:
    """``(topic, retained payload)`` for every entity of ``streams`` (name, manifest) pairs.

    An entity the config turns off (all of them with discovery disabled; the quality and
    anomaly ones without quality tracking) gets an empty payload: it removes the entity
    published before.
    """
    ha, device = cfg.homeassistant, cfg.device.id
    node = f"sensorcast_{device}"
    shared = {
        "availability_topic": status_topic,
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": cfg.mqtt.qos,
        "device": {
            "identifiers": [node],
            "name": f"sensorcast {device}",
            "manufacturer": "sensorcast",
            "model": "sensorcast agent",
            "sw_version": __version__,
        },
        "origin": _ORIGIN,
    }
    out: list[tuple[str, bytes]] = []
    for name, manifest in streams:
        s = _stream_topics(cfg, name, manifest)
        entities = _forecast_sensors(cfg, name, manifest, s.forecast) + diagnostic_entities(s)
        for e in entities:
            topic = discovery_topic(ha.discovery_prefix, node, e.object_id, e.component)
            if not ha.enabled or e.config is None:
                out.append((topic, b""))
                continue
            ids = {"unique_id": f"{node}_{e.object_id}", "object_id": f"{node}_{e.object_id}"}
            config = {**ids, **e.config, **shared}
            out.append((topic, json.dumps(config, ensure_ascii=False).encode()))
    return out
