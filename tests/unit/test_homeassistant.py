"""Home Assistant discovery configs from a config and manifests (no broker: the integration
test sends them through Mosquitto)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sensorcast.agent.config import load_config
from sensorcast.agent.control.homeassistant import discovery_messages, expire_after_s
from sensorcast.agent.errors import ConfigError
from sensorcast.agent.forecast.manifest import read_bundle

from tests.support.configs import agent_config, topic_stream
from tests.support.paths import DEMO_DIR

DEMO = DEMO_DIR / "room.tflite"


def _config(tmp_path: Path, stream: dict[str, Any] | None = None, **tables: Any) -> Path:
    """Device ``pi``, one stream (with the ``stream`` keys) and the other ``tables``."""
    room = topic_stream(DEMO, "in", **(stream or {}))
    return agent_config(tmp_path, device="pi", streams=[room], name="c.toml", **tables)


def test_two_sensors_per_target_with_units_and_device_class(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, {"units": {"temperature": "°C"}}))
    manifest = read_bundle(DEMO).manifest
    messages = discovery_messages(cfg, [("room", manifest)], "sensorcast/pi/status")
    assert [t for t, _ in messages] == [
        "homeassistant/sensor/sensorcast_pi/room_temperature_next/config",
        "homeassistant/sensor/sensorcast_pi/room_temperature_end/config",
    ]
    end = json.loads(messages[1][1])
    assert end["name"] == "room temperature forecast in 60 min"  # 12 x 300 s
    assert end["expire_after"] == 900  # three 300 s periods
    assert end["unit_of_measurement"] == "°C" and end["device_class"] == "temperature"


def test_no_unit_no_device_class_and_disabled_removes(tmp_path: Path) -> None:
    manifest = read_bundle(DEMO).manifest
    cfg = load_config(_config(tmp_path))
    doc = json.loads(discovery_messages(cfg, [("room", manifest)], "s")[0][1])
    assert "unit_of_measurement" not in doc and "device_class" not in doc
    off = load_config(_config(tmp_path, homeassistant={"enabled": False}))
    assert [p for _, p in discovery_messages(off, [("room", manifest)], "s")] == [b"", b""]


def test_expiry_is_three_periods_at_least_a_minute() -> None:
    assert expire_after_s(0.2) == 60 and expire_after_s(300) == 900 and expire_after_s(25) == 75


def test_bad_homeassistant_keys_are_named(tmp_path: Path) -> None:
    bad = _config(
        tmp_path,
        {"units": {"temperature": 3}},
        homeassistant={"discovery_prefix": "ha/#", "what": 1},
    )
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    text = str(err.value)
    assert "homeassistant.discovery_prefix: must be a topic name without wildcards" in text
    assert "homeassistant.what" in text
    assert "streams[0].units: must map target names to unit strings" in text
