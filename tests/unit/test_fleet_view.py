"""The fleet view: the retained messages a real agent published (tests/data/
fleet-messages.json: a device behind site-a running a shadow model, captured from a running
agent, plus a model/state message of the contract's shape) folded into a Fleet; deletions by
empty payloads; bridge states; malformed messages counted, never raised; the status table
and JSON document made from the view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sensorcast.agent.fleet.model import Fleet
from sensorcast.agent.fleet.status import document, summary, table
from sensorcast.agent.fleet.view import apply

MESSAGES = Path(__file__).parents[1] / "data" / "fleet-messages.json"


@pytest.fixture
def captured() -> dict[str, bytes]:
    raw: dict[str, str] = json.loads(MESSAGES.read_text())
    return {topic: text.encode() for topic, text in raw.items()}


def _fleet(messages: dict[str, bytes]) -> Fleet:
    fleet = Fleet("sc")
    for topic, payload in messages.items():
        apply(fleet, topic, payload)
    return fleet


def _body(messages: dict[str, bytes], topic: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(messages[topic])
    return body


def test_a_real_agents_messages_make_its_device(captured: dict[str, bytes]) -> None:
    fleet = _fleet(captured)
    metrics = _body(captured, "sc/dev1/metrics")
    quality = _body(captured, "sc/dev1/room/quality")
    dev = fleet.devices["dev1"]
    assert (dev.status, dev.site, dev.version) == ("online", "site-a", metrics["build"]["version"])
    assert dev.started == metrics["started"] and dev.metrics_time == metrics["time"]
    room = dev.streams["room"]
    assert room.model == metrics["streams"]["room"]["model"] == quality["model"]
    assert room.shadow == quality["shadow"]["model"] != room.model
    assert room.last_forecast == metrics["streams"]["room"]["last_forecast"]
    assert room.skill == metrics["streams"]["room"]["skill"]
    assert room.coverage == metrics["streams"]["room"]["coverage"]
    assert room.anomaly and not room.drift and not room.fallback
    assert room.quality == quality and room.quality_time == quality["time"]
    assert dev.model_state is not None and dev.model_state["status"] == "applied"
    assert dev.anomalies["room"]["reason"] == "dropout"
    assert fleet.bridges == {"site-a": True} and fleet.state(dev) == "online"
    assert fleet.errors == 0 and fleet.messages == len(captured)


def test_the_order_of_the_retained_burst_does_not_matter(captured: dict[str, bytes]) -> None:
    forward = _fleet(captured)
    backward = _fleet(dict(reversed(list(captured.items()))))
    assert forward == backward


def test_the_newer_message_names_the_models(captured: dict[str, bytes]) -> None:
    """The quality report (made later than these metrics) ran a new model: it wins, and
    metrics made before it do not bring the old label back."""
    fleet = _fleet(captured)
    quality = _body(captured, "sc/dev1/room/quality")
    newer = {**quality, "model": "room@aaaaaaaaaaaa", "shadow": None, "time": quality["time"] + 5}
    apply(fleet, "sc/dev1/room/quality", json.dumps(newer).encode())
    apply(fleet, "sc/dev1/metrics", captured["sc/dev1/metrics"])
    room = fleet.devices["dev1"].streams["room"]
    assert (room.model, room.shadow) == ("room@aaaaaaaaaaaa", None)


def test_bridge_states_make_devices_unreachable(captured: dict[str, bytes]) -> None:
    fleet = _fleet(captured)
    dev = fleet.devices["dev1"]
    apply(fleet, "sc/fleet/sites/site-a/bridge", b"0")
    assert fleet.bridges == {"site-a": False}
    assert fleet.state(dev) == "unreachable" and not fleet.reachable(dev)
    apply(fleet, "sc/fleet/sites/site-a/bridge", b"1")
    assert fleet.state(dev) == "online" and fleet.reachable(dev)
    apply(fleet, "sc/fleet/sites/site-a/bridge", b"")
    assert fleet.bridges == {}
    apply(fleet, "sc/dev1/status", b"offline")
    assert fleet.state(dev) == "offline"


def test_empty_payloads_clear_what_they_described(captured: dict[str, bytes]) -> None:
    fleet = _fleet(captured)
    dev = fleet.devices["dev1"]
    apply(fleet, "sc/dev1/model/state", b"")
    apply(fleet, "sc/dev1/room/anomaly", b"")
    assert dev.model_state is None and dev.anomalies == {}
    apply(fleet, "sc/dev1/metrics", b"")
    assert dev.version is None and dev.site is None
    assert dev.streams["room"].quality is not None  # the quality report is still retained
    apply(fleet, "sc/dev1/room/quality", b"")
    assert dev.streams == {}
    assert "dev1" in fleet.devices  # its status is still there
    apply(fleet, "sc/dev1/status", b"")
    assert fleet.devices == {} and fleet.errors == 0


def test_a_stream_the_device_stopped_running_goes(captured: dict[str, bytes]) -> None:
    fleet = Fleet("sc")
    metrics = _body(captured, "sc/dev1/metrics")
    two = {**metrics, "streams": {**metrics["streams"], "attic": metrics["streams"]["room"]}}
    apply(fleet, "sc/dev1/metrics", json.dumps(two).encode())
    assert set(fleet.devices["dev1"].streams) == {"room", "attic"}
    apply(fleet, "sc/dev1/metrics", captured["sc/dev1/metrics"])
    assert set(fleet.devices["dev1"].streams) == {"room"}


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("sc/dev1/metrics", b"{not json"),
        ("sc/dev1/metrics", b"\xff\xfe"),
        ("sc/dev1/metrics", b"[1, 2]"),
        ("sc/dev1/metrics", b'{"build": "0.1", "streams": {}}'),
        ("sc/dev1/metrics", b'{"build": {}, "streams": {"room": 3}}'),
        ("sc/dev1/metrics", b'{"build": {}, "streams": {"room": {"last_forecast": "now"}}}'),
        ("sc/dev1/metrics", b'{"build": {}, "streams": {"room": {"skill": [1]}}}'),
        ("sc/dev1/metrics", b'{"build": {"version": 3}, "streams": {}}'),
        ("sc/dev1/metrics", b'{"build": {}, "streams": {}, "time": true}'),
        ("sc/dev1/room/quality", b'{"model": 5}'),
        ("sc/dev1/room/quality", b'{"model": "m", "shadow": "yes"}'),
        ("sc/dev1/room/quality", b"[" * 100_000),
        ("sc/dev1/room/anomaly", b'"anomaly"'),
        ("sc/dev1/model/state", b'{"stream": "room"}'),
        ("sc/dev1/status", b"maybe"),
        ("sc/fleet/sites/site-a/bridge", b"up"),
    ],
)
def test_malformed_messages_are_counted_and_change_nothing(
    captured: dict[str, bytes], topic: str, payload: bytes
) -> None:
    fleet = _fleet(captured)
    before = fleet.copy()
    apply(fleet, topic, payload)
    assert fleet.errors == 1
    fleet.errors, fleet.messages = before.errors, before.messages
    assert fleet == before


def test_topics_that_are_not_device_state_are_left_alone() -> None:
    fleet = Fleet("sc")
    for topic in ("other/dev1/status", "sc/fleet/rollout/r1", "sc/dev1/model/reply/ctl",
                  "sc/dev1/room/forecast", "sc//status"):  # fmt: skip
        apply(fleet, topic, b"online")
    assert fleet.devices == {} and fleet.errors == 0


def test_a_copy_does_not_move_with_the_view(captured: dict[str, bytes]) -> None:
    fleet = _fleet(captured)
    copy = fleet.copy()
    apply(fleet, "sc/dev1/status", b"offline")
    apply(fleet, "sc/dev2/status", b"online")
    apply(fleet, "sc/fleet/sites/site-a/bridge", b"0")
    assert copy.devices["dev1"].status == "online" and set(copy.devices) == {"dev1"}
    assert copy.bridges == {"site-a": True}


def test_status_table_and_document(captured: dict[str, bytes]) -> None:
    fleet = _fleet(captured)
    apply(fleet, "sc/dev2/status", b"online")  # no stream yet: listed all the same
    apply(fleet, "sc/dev3/status", b"offline")
    apply(fleet, "sc/fleet/sites/site-a/bridge", b"0")
    room = fleet.devices["dev1"].streams["room"]
    assert room.last_forecast is not None
    fleet.time = room.last_forecast + 12.4
    lines = table(fleet).splitlines()
    assert lines[0].split()[:3] == ["DEVICE", "SITE", "STATE"]
    first = lines[1].split()
    assert first[:7] == ["dev1", "site-a", "unreachable", "0.1.0", "room", str(room.model),
                         str(room.shadow)]  # fmt: skip
    assert "12 s ago" in lines[1] and "+0.43" in lines[1] and "0.91" in lines[1]
    assert "anomaly" in lines[1] and lines[1].endswith("applied install")
    assert lines[2].split()[:5] == ["dev2", "-", "online", "-", "-"]
    assert lines[-1] == (
        "3 devices: 1 online, 1 offline, 1 unreachable; sites with bridge down: site-a"
    )
    doc = document(fleet)
    assert doc["summary"] == summary(fleet) == {
        "devices": 3, "online": 1, "offline": 1, "unreachable": 1, "unknown": 0,
        "bridges_down": ["site-a"], "errors": 0, "complete": True,
    }  # fmt: skip
    stream = doc["devices"][0]["streams"][0]
    assert stream["last_forecast_age_s"] == pytest.approx(12.4)
    assert stream["shadow_mae_ratio"] == room.quality["shadow"]["mae_ratio"]  # type: ignore[index]
    assert stream["anomaly"] is True and stream["drift"] is False
    assert json.loads(json.dumps(doc)) == doc
    assert [d["id"] for d in document(fleet, stream="attic")["devices"]] == ["dev2", "dev3"]
