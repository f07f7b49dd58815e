"""Home Assistant MQTT discovery through a real broker: the configs carry only the fields Home
Assistant documents for MQTT sensors and binary sensors, their templates render (with
Jinja, as Home Assistant does) against the agent's real messages and against the older,
shorter ones a retained topic may still hold, the forecast is retained while discovery is
on, and discovery is re-published when Home Assistant comes online. tests/homeassistant
shows the same entities in a real Home Assistant 2024.3.3."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.ha_templates import render
from tests.support.mqtt import Subscriber

pytestmark = pytest.mark.mqtt

PERIOD = 0.2

#: Configuration variables of MQTT sensors and binary sensors, from
#: home-assistant.io/integrations/sensor.mqtt and .../binary_sensor.mqtt (and discovery's
#: `origin`): a config with any other key is rejected by Home Assistant.
COMMON_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "device", "device_class", "enabled_by_default", "encoding", "entity_category",
    "entity_picture", "expire_after", "force_update", "icon", "json_attributes_template",
    "json_attributes_topic", "name", "object_id", "origin", "payload_available",
    "payload_not_available", "platform", "qos", "state_topic", "unique_id", "value_template",
}  # fmt: skip
KEYS = {
    "sensor": COMMON_KEYS | {"last_reset_value_template", "options", "state_class",
                             "suggested_display_precision", "unit_of_measurement"},
    "binary_sensor": COMMON_KEYS | {"off_delay", "payload_off", "payload_on"},
}  # fmt: skip
DEVICE_KEYS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
    "name", "serial_number", "suggested_area", "sw_version", "via_device",
}  # fmt: skip
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
#: What an agent before intervals, fallback and the new quality keys published.
OLD_FORECAST = {"model", "window_end", "period_s", "steps", "values"}
OLD_QUALITY = {"stream": "room", "model": "room@x", "time": 1.0, "ratio": None, "drift": False}


def _render_all(docs: dict[str, dict[str, Any]], payloads: dict[str, bytes]) -> dict[str, Any]:
    """Each entity's state and attributes for the latest message on its state topic."""
    out: dict[str, Any] = {}
    for name, doc in docs.items():
        payload = payloads[doc["state_topic"].rsplit("/", 1)[-1]]
        attributes = doc.get("json_attributes_template")
        out[name] = (
            render(doc["value_template"], payload),
            json.loads(render(attributes, payload)) if attributes else None,
        )
    return out


def test_entities_appear_in_home_assistant_without_yaml(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    calibrated_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    ha = f"{topic_prefix}-ha"
    config = agent_config(
        tmp_path,
        device="kitchen",
        port=mosquitto.port,
        prefix=topic_prefix,
        homeassistant={"discovery_prefix": ha},
        streams=[stdin_stream(calibrated_bundle, units={"temperature": "°C"})],
    )
    discovery = subscriber_factory(mosquitto.port, f"{ha}/#")
    sent = subscriber_factory(mosquitto.port, f"{topic_prefix}/kitchen/#")
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:40, 1:]
    proc = start_agent(config)
    try:
        assert discovery.wait_for(lambda ms: len(ms) >= 10, 20), discovery.messages
        assert all(retained is False for *_, retained in discovery.messages)  # live, not stale
        late = subscriber_factory(mosquitto.port, f"{ha}/#")  # Home Assistant starting later
        assert late.wait_for(lambda ms: len(ms) >= 10, 10)
        assert all(retained for *_, retained in late.messages), "discovery must be retained"

        docs = {t.split("/")[-2][len("room_") :]: json.loads(p) for t, p, _ in discovery.messages}
        components = {
            t.split("/")[-2][len("room_") :]: t.split("/")[1] for t, *_ in discovery.messages
        }
        assert sorted(components.items()) == sorted(
            [("temperature_next", "sensor"), ("temperature_end", "sensor"),
             ("anomaly", "binary_sensor"), ("drift", "binary_sensor"),
             ("fallback", "binary_sensor"), ("skill", "sensor"),
             ("coverage", "sensor"), ("error_ratio", "sensor"), ("last_forecast", "sensor"),
             ("model", "sensor")]
        )  # fmt: skip
        for name, doc in docs.items():
            assert set(doc) <= KEYS[components[name]], set(doc) - KEYS[components[name]]
            assert set(doc["device"]) <= DEVICE_KEYS and set(doc["origin"]) <= ORIGIN_KEYS
            assert doc["device"]["identifiers"] == ["sensorcast_kitchen"]
            assert doc["availability_topic"] == f"{topic_prefix}/kitchen/status"
        assert docs["temperature_end"]["expire_after"] == 60  # 3 periods of 0.2 s, >= 1 min
        assert len({d["unique_id"] for d in docs.values()}) == 10

        assert proc.stdin is not None
        proc.stdin.write("".join(json_lines(rows, 1_700_000_000, PERIOD)))
        proc.stdin.flush()
        assert sent.wait_for(lambda _: len(sent.payloads("/forecast")) >= 10, 30)
        assert sent.wait_for(lambda _: bool(sent.payloads("/quality")), 30)
        retained = subscriber_factory(mosquitto.port, f"{topic_prefix}/kitchen/room/forecast")
        assert retained.wait_for(lambda ms: bool(ms) and ms[0][2], 10), "forecast not retained"

        # Home Assistant restarts and says so: discovery again.
        before = len(discovery.messages)
        sent.client.publish(f"{ha}/status", b"online", qos=1)
        assert discovery.wait_for(lambda ms: len(ms) >= before + 10, 10), "not re-published"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Home Assistant is online: publishing discovery" in stderr

    anomaly = {"anomaly": True, "feature": "temperature", "reason": "step", "since": 1.0e9}
    latest = {
        "forecast": sent.payloads("/forecast")[-1],
        "quality": sent.payloads("/quality")[-1],
        "anomaly": json.dumps(anomaly).encode(),
    }
    shown = _render_all(docs, latest)
    forecast = json.loads(latest["forecast"])
    values, lower, upper = forecast["values"], forecast["lower"], forecast["upper"]
    assert lower is not None and upper is not None, "no interval in the forecast"
    state, attributes = shown["temperature_end"]
    assert float(state) == round(values[-1][0], 3)
    assert attributes["lower"] == lower[-1][0] and attributes["upper"] == upper[-1][0]
    assert attributes["lower_by_step"] == [r[0] for r in lower] and attributes["level"] == 0.8
    assert attributes["at_iso"].startswith("2023-11-14T22:1") and attributes["at_iso"].endswith(
        "+00:00"
    )
    assert shown["anomaly"][0] == "ON" and shown["anomaly"][1]["since_iso"] is None
    assert shown["drift"][0] in ("ON", "OFF") and shown["last_forecast"][0].startswith(
        "2023-11-14T"
    )

    # Older agents' retained messages: unknown ("None") or defaults, never a template error.
    old = {
        "forecast": json.dumps({k: forecast[k] for k in OLD_FORECAST}).encode(),
        "quality": json.dumps(OLD_QUALITY).encode(),
        "anomaly": b'{"anomaly": false}',
    }
    shown = _render_all(docs, old)
    assert (
        shown["temperature_next"][1]["lower"] is None
        and shown["temperature_next"][1]["level"] is None
    )
    assert [shown[k][0] for k in ("skill", "coverage", "error_ratio")] == ["None"] * 3
    keys = ("reason", "feature", "since", "since_iso", "time", "time_iso")
    assert shown["anomaly"] == ("OFF", dict.fromkeys(keys))
