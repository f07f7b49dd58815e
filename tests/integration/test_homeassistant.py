"""Home Assistant MQTT discovery through a real broker: the configs carry the fields Home
Assistant documents for MQTT sensors, their templates render (with Jinja, as Home Assistant
does) to the forecast's values, and they are re-published when Home Assistant comes online."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Callable

import jinja2
import numpy as np

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.mqtt import Subscriber

PERIOD = 0.2

#: Configuration variables of an MQTT sensor, from home-assistant.io/integrations/sensor.mqtt
#: (and discovery's `origin`): a config with any other key is rejected by Home Assistant.
SENSOR_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "default_entity_id", "device", "device_class", "enabled_by_default", "encoding",
    "entity_category", "entity_picture", "expire_after", "force_update", "icon",
    "json_attributes_template", "json_attributes_topic", "last_reset_value_template", "name",
    "object_id", "options", "origin", "payload_available", "payload_not_available", "platform",
    "qos", "state_class", "state_topic", "suggested_display_precision", "unique_id",
    "unit_of_measurement", "value_template",
}  # fmt: skip
DEVICE_KEYS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
    "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device",
}  # fmt: skip
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
STATE_CLASSES = {"measurement", "total", "total_increasing", "measurement_angle"}


def _render(template: str, payload: bytes) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.policies["json.dumps_kwargs"] = {"sort_keys": True}
    return env.from_string(template).render(value_json=json.loads(payload), value=payload)


def test_forecasts_appear_in_home_assistant_without_yaml(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
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
        streams=[stdin_stream(fast_bundle, units={"temperature": "°C"})],
    )
    discovery = subscriber_factory(mosquitto.port, f"{ha}/#")
    forecasts = subscriber_factory(mosquitto.port, f"{topic_prefix}/kitchen/#")
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:26, 1:]
    proc = start_agent(config)
    try:
        configs = f"{ha}/sensor/sensorcast_kitchen/"
        assert discovery.wait_for(lambda ms: len(ms) >= 2, 20), "no discovery"
        topics = sorted(t for t, _, _ in discovery.messages)
        assert topics == [f"{configs}room_temperature_end/config",
                          f"{configs}room_temperature_next/config"]  # fmt: skip
        assert all(retained is False for *_, retained in discovery.messages)  # live, not stale
        late = subscriber_factory(mosquitto.port, f"{ha}/#")  # Home Assistant starting later
        assert late.wait_for(lambda ms: len(ms) >= 2, 10)
        assert all(retained for *_, retained in late.messages), "discovery must be retained"

        docs = {t.split("/")[-2]: json.loads(p) for t, p, _ in discovery.messages}
        for doc in docs.values():
            assert set(doc) <= SENSOR_KEYS, set(doc) - SENSOR_KEYS
            assert set(doc["device"]) <= DEVICE_KEYS and set(doc["origin"]) <= ORIGIN_KEYS
            assert doc["device"]["identifiers"] == ["sensorcast_kitchen"]
            assert doc["state_topic"] == f"{topic_prefix}/kitchen/room/forecast"
            assert doc["availability_topic"] == f"{topic_prefix}/kitchen/status"
            assert doc["state_class"] in STATE_CLASSES
            assert doc["unit_of_measurement"] == "°C" and doc["device_class"] == "temperature"
            assert doc["expire_after"] == 60  # 3 periods of 0.2 s, at least a minute
        assert len({d["unique_id"] for d in docs.values()}) == 2

        assert proc.stdin is not None
        proc.stdin.write("".join(json_lines(rows, 1_700_000_000, PERIOD)))
        proc.stdin.flush()
        assert forecasts.wait_for(lambda _: len(forecasts.payloads("/forecast")) >= 3, 30)
        payload = forecasts.payloads("/forecast")[-1]
        values: list[list[float]] = json.loads(payload)["values"]
        nxt, end = docs["room_temperature_next"], docs["room_temperature_end"]
        assert float(_render(nxt["value_template"], payload)) == round(values[0][0], 3)
        assert float(_render(end["value_template"], payload)) == round(values[-1][0], 3)
        assert end["name"] == "room temperature forecast in 2.4 s"  # 12 steps of 0.2 s
        assert nxt["name"] == "room temperature forecast next"
        attributes: dict[str, Any] = json.loads(_render(end["json_attributes_template"], payload))
        assert attributes["values"] == [v[0] for v in values]
        assert attributes["at"] == json.loads(payload)["steps"][-1]
        assert attributes["model"].startswith("room@")

        # Home Assistant restarts and says so: discovery again.
        before = len(discovery.messages)
        forecasts.client.publish(f"{ha}/status", b"online", qos=1)
        assert discovery.wait_for(lambda ms: len(ms) >= before + 2, 10), "not re-published"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Home Assistant is online: publishing discovery" in stderr
