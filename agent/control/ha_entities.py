"""The Home Assistant entities of one stream besides its forecast sensors.

* ``<stream>_anomaly``: a ``binary_sensor`` (device class ``problem``) on the stream's
  retained anomaly topic; attributes ``reason``, ``feature``, ``since`` (Unix s) and their
  ISO-8601 forms.
* Diagnostics (``entity_category: diagnostic``), from the retained quality report: drift
  (``binary_sensor``, ``problem``), fallback active (``binary_sensor``), skill against
  carrying the last value forward (%), interval coverage (%), error ratio (rolling MAE /
  the bundle's promised MAE); from the forecast topic: the last forecast's time
  (``timestamp``) and the model label.

Every template reads keys with ``get`` and renders ``None`` (Home Assistant: unknown) for a
key that is null or missing, so a retained message from an older agent, or a report made
before enough actuals arrived, never breaks a sensor. ISO-8601 times come from Home
Assistant's ``timestamp_utc`` filter (or are the agent's own ``*_iso`` keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["Entity", "StreamTopics", "diagnostic_entities"]


@dataclass(frozen=True)
class Entity:
    """One discovery config: ``config`` None means remove (an empty retained payload)."""

    component: str  #: ``sensor`` or ``binary_sensor``.
    object_id: str  #: Unique within the agent's node.
    config: Optional[dict[str, Any]]


@dataclass(frozen=True)
class StreamTopics:
    """A stream's state topics and which of them the agent publishes."""

    name: str
    forecast: str
    quality: str
    anomaly: str
    has_quality: bool  #: The stream tracks quality (``[quality]`` on, targets among features).
    has_anomaly: bool  #: ... and raises anomalies (``quality.anomaly``).


#: Attributes every quality-topic entity carries: when the report was made.
_Q_TIME = "'time': value_json.get('time'), 'time_iso': value_json.get('time_iso')"
#: The anomaly message's fields shown as attributes.
_ANOMALY = (
    "'reason': value_json.get('reason'), 'feature': value_json.get('feature'), "
    "'since': value_json.get('since'), 'since_iso': value_json.get('since_iso'), "
)
#: A binary sensor's state from a boolean key (missing or null: off).
_ON_OFF = "{{{{ 'ON' if value_json.get('{key}') else 'OFF' }}}}"


def _percent(expr: str) -> str:
    """A 0-1 fraction as a percentage with one decimal, or None when not a number."""
    return f"{{% set v = {expr} %}}{{{{ (v * 100) | round(1) if v is number else none }}}}"


def _attributes(pairs: str) -> str:
    """A ``json_attributes_template`` of ``'key': expression`` pairs."""
    return "{{ {" + pairs + "} | tojson }}"


def _diagnostic(name: str, topic: str, value_template: str, **extra: Any) -> dict[str, Any]:
    """A diagnostic entity's config (Home Assistant files it under the device's Diagnostic
    section and leaves it out of generated dashboards)."""
    return {
        "name": name,
        "state_topic": topic,
        "value_template": value_template,
        "entity_category": "diagnostic",
        **extra,
    }


def _anomaly(s: StreamTopics) -> Entity:
    config = {
        "name": f"{s.name} anomaly",
        "state_topic": s.anomaly,
        "value_template": _ON_OFF.format(key="anomaly"),
        "payload_on": "ON",
        "payload_off": "OFF",
        "device_class": "problem",
        "json_attributes_topic": s.anomaly,
        "json_attributes_template": _attributes(_ANOMALY + _Q_TIME),
        "icon": "mdi:chart-bell-curve",
    }
    return Entity("binary_sensor", f"{s.name}_anomaly", config if s.has_anomaly else None)


def _quality_entities(s: StreamTopics) -> list[Entity]:
    q = s.quality
    skill = "(value_json.get('skill') or {}).get('last_value')"
    entities = [
        Entity("binary_sensor", f"{s.name}_drift", _diagnostic(
            f"{s.name} drift", q, _ON_OFF.format(key="drift"),
            payload_on="ON", payload_off="OFF", device_class="problem",
            json_attributes_topic=q,
            json_attributes_template=_attributes(
                "'ratio': value_json.get('ratio'), "
                "'drift_factor': value_json.get('drift_factor'), " + _Q_TIME
            ),
        )),
        Entity("binary_sensor", f"{s.name}_fallback", _diagnostic(
            f"{s.name} fallback", q, _ON_OFF.format(key="fallback"),
            payload_on="ON", payload_off="OFF", icon="mdi:backup-restore",
            json_attributes_topic=q,
            json_attributes_template=_attributes(
                "'fallback': value_json.get('fallback'), " + _Q_TIME
            ),
        )),
        Entity("sensor", f"{s.name}_skill", _diagnostic(
            f"{s.name} skill vs last value", q, _percent(skill),
            unit_of_measurement="%", state_class="measurement", icon="mdi:scale-balance",
            json_attributes_topic=q,
            json_attributes_template=_attributes(
                "'skill': value_json.get('skill'), " + _Q_TIME
            ),
        )),
        Entity("sensor", f"{s.name}_coverage", _diagnostic(
            f"{s.name} interval coverage", q, _percent("value_json.get('coverage')"),
            unit_of_measurement="%", state_class="measurement", icon="mdi:arrow-expand-vertical",
            json_attributes_topic=q,
            json_attributes_template=_attributes(
                "'level': value_json.get('level'), " + _Q_TIME
            ),
        )),
        Entity("sensor", f"{s.name}_error_ratio", _diagnostic(
            f"{s.name} error ratio", q,
            "{% set v = value_json.get('ratio') %}"
            "{{ v | round(3) if v is number else none }}",
            state_class="measurement", icon="mdi:sigma",
        )),
    ]  # fmt: skip
    return [e if s.has_quality else Entity(e.component, e.object_id, None) for e in entities]


def _forecast_entities(s: StreamTopics) -> list[Entity]:
    f = s.forecast
    return [
        Entity("sensor", f"{s.name}_last_forecast", _diagnostic(
            f"{s.name} last forecast", f,
            # the end of the newest period the forecast saw: when it could be made
            "{{ (value_json.window_end + value_json.period_s) | timestamp_utc(none) }}",
            device_class="timestamp", icon="mdi:clock-check-outline",
        )),
        Entity("sensor", f"{s.name}_model", _diagnostic(
            f"{s.name} model", f, "{{ value_json.model }}", icon="mdi:brain",
        )),
    ]  # fmt: skip


def diagnostic_entities(s: StreamTopics) -> list[Entity]:
    """The anomaly and diagnostic entities of one stream (configs without the keys every
    entity shares: ``unique_id``, device, availability, ``qos``, origin)."""
    return [_anomaly(s), *_quality_entities(s), *_forecast_entities(s)]
