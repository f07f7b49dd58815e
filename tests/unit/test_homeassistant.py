"""Home Assistant discovery configs from a config and manifests (no broker: the integration
test sends them through Mosquitto, tests/homeassistant shows them in a real Home Assistant),
and the units check ``sensorcast check`` runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sensorcast.agent.cli import main
from sensorcast.agent.config import load_config
from sensorcast.agent.control.ha_units import DEVICE_CLASS_UNITS, check_units, unit_problems
from sensorcast.agent.control.homeassistant import discovery_messages, expire_after_s
from sensorcast.agent.errors import ConfigError
from sensorcast.agent.forecast.manifest import read_bundle

from tests.support.configs import agent_config, topic_stream
from tests.support.paths import DEMO_DIR

DEMO = DEMO_DIR / "room.tflite"
NODE = "homeassistant/{}/sensorcast_pi/room_{}/config"
ENTITIES = [
    ("sensor", "temperature_next"), ("sensor", "temperature_end"),
    ("binary_sensor", "anomaly"), ("binary_sensor", "drift"), ("binary_sensor", "fallback"),
    ("sensor", "skill"), ("sensor", "coverage"), ("sensor", "error_ratio"),
    ("sensor", "last_forecast"), ("sensor", "model"),
]  # fmt: skip
QUALITY = {"drift", "fallback", "skill", "coverage", "error_ratio"}


def _config(tmp_path: Path, stream: dict[str, Any] | None = None, **tables: Any) -> Path:
    """Device ``pi``, one stream (with the ``stream`` keys) and the other ``tables``."""
    room = topic_stream(DEMO, "in", **(stream or {}))
    return agent_config(tmp_path, device="pi", streams=[room], name="c.toml", **tables)


def _docs(cfg_path: Path) -> dict[str, Any]:
    """Object id (without ``room_``) -> its config (None: removed)."""
    cfg = load_config(cfg_path)
    messages = discovery_messages(
        cfg, [("room", read_bundle(DEMO).manifest)], "sensorcast/pi/status"
    )
    assert [t for t, _ in messages] == [NODE.format(c, o) for c, o in ENTITIES]
    return {t.split("/")[-2][5:]: json.loads(p) if p else None for t, p in messages}


def test_forecast_sensors_with_units_and_device_class(tmp_path: Path) -> None:
    docs = _docs(_config(tmp_path, {"units": {"temperature": "°C"}}))
    end = docs["temperature_end"]
    assert end["name"] == "room temperature forecast in 60 min"  # 12 x 300 s
    assert end["expire_after"] == 900  # three 300 s periods
    assert end["unit_of_measurement"] == "°C" and end["device_class"] == "temperature"
    assert (
        end["state_class"] == "measurement"
        and end["unique_id"] == "sensorcast_pi_room_temperature_end"
    )
    assert "lower_by_step" in end["json_attributes_template"]
    for doc in docs.values():
        assert doc["availability_topic"] == "sensorcast/pi/status"
        assert doc["device"]["identifiers"] == ["sensorcast_pi"]


def test_anomaly_and_diagnostic_entities(tmp_path: Path) -> None:
    docs = _docs(_config(tmp_path))
    anomaly = docs["anomaly"]
    assert (
        anomaly["state_topic"] == "sensorcast/pi/room/anomaly" and "entity_category" not in anomaly
    )
    assert anomaly["device_class"] == "problem"
    for name in QUALITY:
        assert docs[name]["state_topic"] == "sensorcast/pi/room/quality", name
    for name in (*QUALITY, "last_forecast", "model"):
        assert docs[name]["entity_category"] == "diagnostic", name
    assert docs["last_forecast"]["device_class"] == "timestamp"
    assert docs["last_forecast"]["state_topic"] == "sensorcast/pi/room/forecast"
    assert (
        docs["drift"]["device_class"] == "problem" and docs["skill"]["unit_of_measurement"] == "%"
    )
    assert (
        "expire_after" not in docs["model"]
        and "unit_of_measurement" not in docs["temperature_next"]
    )


def test_disabled_removes_every_entity_and_quality_off_removes_its_own(tmp_path: Path) -> None:
    off = _docs(_config(tmp_path, homeassistant={"enabled": False}))
    assert all(doc is None for doc in off.values())
    no_quality = _docs(_config(tmp_path, quality={"enabled": False}))
    assert {k for k, v in no_quality.items() if v is None} == QUALITY | {"anomaly"}
    no_anomaly = _docs(_config(tmp_path, quality={"anomaly": False}))
    assert {k for k, v in no_anomaly.items() if v is None} == {"anomaly"}


def test_a_meter_like_device_class_gets_no_measurement_state_class(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, {"units": {"energy": "kWh"}}))
    energy = replace(read_bundle(DEMO).manifest, targets=("energy",))
    doc = json.loads(discovery_messages(cfg, [("room", energy)], "s")[0][1])
    assert doc["name"] == "room energy forecast next" and doc["device_class"] == "energy"
    assert "state_class" not in doc  # Home Assistant allows only total(_increasing) there


def test_expiry_is_three_periods_at_least_a_minute() -> None:
    assert expire_after_s(0.2) == 60 and expire_after_s(300) == 900 and expire_after_s(25) == 75


def test_units_home_assistant_rejects_are_named_with_the_accepted_ones(tmp_path: Path) -> None:
    manifest = read_bundle(DEMO).manifest
    bad = load_config(_config(tmp_path, {"units": {"temperature": "C"}}))
    assert unit_problems(bad, [("room", manifest)]) == [
        "stream room: units.temperature = 'C' is not a unit Home Assistant accepts for device "
        "class temperature; use one of: K, °C, °F"
    ]
    with pytest.raises(ConfigError, match=r"c\.toml: stream room: units\.temperature = 'C'"):
        check_units(bad, [("room", manifest)])
    for ok in ("°C", "°F", "K"):
        check_units(
            load_config(_config(tmp_path, {"units": {"temperature": ok}})), [("room", manifest)]
        )
    quiet = load_config(
        _config(tmp_path, {"units": {"temperature": "C"}}, homeassistant={"enabled": False})
    )
    assert unit_problems(quiet, [("room", manifest)]) == []  # the unit goes nowhere
    assert (
        DEVICE_CLASS_UNITS["carbon_dioxide"] == {"ppm"}
        and "°C" not in DEVICE_CLASS_UNITS["humidity"]
    )


def test_check_refuses_a_unit_home_assistant_rejects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", str(_config(tmp_path, {"units": {"temperature": "C"}}))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sensorcast: error: config ") and err[-1].endswith(
        "use one of: K, °C, °F"
    )
    assert main(["check", "-c", str(_config(tmp_path, {"units": {"temperature": "°C"}}))]) == 0
    assert ": ok (device pi" in capsys.readouterr().out


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
