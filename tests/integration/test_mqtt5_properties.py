"""What a real MQTT 5 subscriber (paho, protocol 5) receives from the agent through Mosquitto:
content type, payload format and the schema's user property on every JSON message, a
forecast's message expiry no longer than Home Assistant's staleness limit (less the time it
waited in the outbox), and none of it in MQTT 3.1.1. Also the quality message's composition
and an outbox file of an older version, migrated and sent."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sensorcast.agent.control.homeassistant import expire_after_s

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.paths import DEMO_DIR

PERIOD = 0.2
LIMIT = expire_after_s(PERIOD)  #: Home Assistant's staleness limit for these forecasts, s.
ROWS = 80  #: Real room readings replayed (room-30d.csv): windows fill, actuals arrive.


class Received:
    """One message as an MQTT 5 subscriber got it."""

    def __init__(self, msg: Any) -> None:
        self.topic: str = msg.topic
        self.payload = bytes(msg.payload)
        props = msg.properties
        self.content_type: Optional[str] = getattr(props, "ContentType", None)
        self.format: Optional[int] = getattr(props, "PayloadFormatIndicator", None)
        self.user: list[tuple[str, str]] = list(getattr(props, "UserProperty", []))
        self.expiry: Optional[int] = getattr(props, "MessageExpiryInterval", None)


class Subscriber5:
    """A real paho client speaking MQTT 5, collecting messages and their properties."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sub5-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append(Received(msg))
            self._cond.notify_all()

    def on(self, suffix: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout=timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def sub5() -> Iterator[Callable[[int, str], Subscriber5]]:
    made: list[Subscriber5] = []

    def make(port: int, topic: str) -> Subscriber5:
        made.append(Subscriber5(port, topic))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _schema(m: Received) -> Optional[str]:
    return dict(m.user).get("schema")


def _replay(config: Path, sub: Subscriber5) -> str:
    """Run the agent on real room readings until it reported quality and metrics; its log."""
    rows = np.loadtxt(DEMO_DIR / "room-30d.csv", delimiter=",", skiprows=1)[:ROWS, 1:]
    with start_agent(config) as proc:
        assert proc.stdin is not None
        try:
            proc.stdin.write("".join(json_lines(rows, 1_700_000_000, PERIOD)))
            proc.stdin.flush()
            assert sub.wait_for(
                lambda: len(sub.on("/forecast")) == ROWS - 23 and bool(sub.on("/metrics")), 30
            ), [m.topic for m in sub.messages]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert sub.wait_for(lambda: bool(sub.on("/quality")), 10)  # at the latest, at shutdown
    return stderr


@pytest.mark.timeout(90)
def test_an_mqtt5_subscriber_gets_content_type_schema_and_expiry(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    calibrated_bundle: Path,
    tmp_path: Path,
    sub5: Callable[[int, str], Subscriber5],
) -> None:
    """Every JSON message: ``application/json``, payload format 1 (UTF-8), the schema's user
    property; forecasts expire within the staleness limit Home Assistant is told; status
    (plain text) has none of it. The quality message carries the stream's trust state."""
    config = agent_config(
        tmp_path,
        device="p5",
        port=mosquitto.port,
        prefix=topic_prefix,
        mqtt={"protocol": "5"},
        homeassistant={"enabled": False},
        metrics={"interval_s": 1},
        streams=[stdin_stream(calibrated_bundle)],
    )
    sub = sub5(mosquitto.port, f"{topic_prefix}/p5/#")
    _replay(config, sub)

    schemas = {
        "/forecast": "sensorcast.forecast/1",
        "/quality": "sensorcast.quality/1",
        "/metrics": "sensorcast.metrics/1",
        "/anomaly": "sensorcast.anomaly/1",
    }
    for suffix, schema in schemas.items():
        for m in sub.on(suffix):
            assert m.content_type == "application/json" and m.format == 1, (m.topic, m.user)
            assert m.user == [("schema", schema)], (m.topic, m.user)
            json.loads(m.payload.decode("utf-8"))  # what the properties promise
    forecasts = sub.on("/forecast")
    expiries = [m.expiry for m in forecasts]
    # none waited long in the outbox: within a few seconds of the limit, never above it
    assert all(e is not None and LIMIT - 10 <= e <= LIMIT for e in expiries), expiries
    assert all(m.expiry is None for m in sub.on("/quality") + sub.on("/metrics"))
    status = sub.on("/status")
    assert status and all(m.content_type is None and not m.user for m in status)

    quality = json.loads(sub.on("/quality")[-1].payload)
    assert quality["time_iso"].endswith("Z") and quality["time_iso"][:4] == time.strftime("%Y")
    assert quality["fallback"] is None and quality["shadow"] is None
    assert isinstance(quality["anomaly"], bool) and quality["anomalies"] >= 0
    assert quality["level"] == 0.8 and "coverage" in quality and "skill" in quality
    assert quality["residuals"] > 0


def test_mqtt_3_1_1_messages_carry_no_properties(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    calibrated_bundle: Path,
    tmp_path: Path,
    sub5: Callable[[int, str], Subscriber5],
) -> None:
    """An agent speaking 3.1.1 sends what it always sent: an MQTT 5 subscriber sees no
    properties (the broker adds none)."""
    config = agent_config(
        tmp_path,
        device="p3",
        port=mosquitto.port,
        prefix=topic_prefix,
        homeassistant={"enabled": False},
        metrics={"interval_s": 1},
        streams=[stdin_stream(calibrated_bundle)],
    )
    sub = sub5(mosquitto.port, f"{topic_prefix}/p3/#")
    _replay(config, sub)
    assert sub.on("/forecast") and sub.on("/quality")
    assert all(
        m.content_type is None and m.format is None and not m.user and m.expiry is None
        for m in sub.messages
    ), [(m.topic, m.user, m.expiry) for m in sub.messages if m.user or m.expiry]


def _old_outbox(path: Path, topic: str) -> None:
    """An outbox file as versions before ``created`` wrote it, one forecast queued."""
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
        "payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL)"
    )
    db.execute(
        "INSERT INTO outbox (topic, payload, qos, retain) VALUES (?, ?, 1, 0)",
        (topic, b'{"id": "old"}'),
    )
    db.commit()
    db.close()


@pytest.mark.timeout(60)
def test_forecasts_that_waited_in_the_outbox_expire_sooner(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    calibrated_bundle: Path,
    tmp_path: Path,
    sub5: Callable[[int, str], Subscriber5],
) -> None:
    """An outbox file of an older version is migrated and sent: its forecast (age unknown)
    goes out with the minimum expiry, counted late and logged; a forecast queued 45 s
    before the start expires within the limit less those 45 s."""
    state = tmp_path / "state"
    topic = f"{topic_prefix}/ob/room/forecast"
    _old_outbox(state / "outbox-ob.db", topic)
    from sensorcast.agent.publish.outbox import Outbox

    Outbox(state / "outbox-ob.db").close()  # migrates; then a row of the new format
    db = sqlite3.connect(state / "outbox-ob.db")
    db.execute(
        "INSERT INTO outbox (topic, payload, qos, retain, created) VALUES (?, ?, 1, 0, ?)",
        (topic, b'{"id": "aged"}', time.time() - 45),
    )
    db.commit()
    db.close()
    config = agent_config(
        tmp_path,
        device="ob",
        port=mosquitto.port,
        prefix=topic_prefix,
        mqtt={"protocol": "5"},
        homeassistant={"enabled": False},
        metrics={"interval_s": 1},
        state={"dir": state},
        streams=[stdin_stream(calibrated_bundle)],
    )
    sub = sub5(mosquitto.port, f"{topic_prefix}/ob/#")
    with start_agent(config) as proc:
        try:
            assert sub.wait_for(lambda: len(sub.on("/forecast")) == 2, 20)

            def sent_late() -> bool:
                boxes = [json.loads(m.payload)["outbox"] for m in sub.on("/metrics")]
                return any(b["late"] == 1 and b["depth"] == 0 for b in boxes)

            assert sub.wait_for(sent_late, 10), [m.payload for m in sub.on("/metrics")]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    old, aged = sub.on("/forecast")
    assert old.payload == b'{"id": "old"}' and old.expiry == 1, old.expiry
    assert aged.payload == b'{"id": "aged"}' and aged.expiry is not None
    assert 1 <= aged.expiry <= LIMIT - 45, aged.expiry
    assert _schema(old) == _schema(aged) == "sensorcast.forecast/1"
    assert json.loads(sub.on("/metrics")[-1].payload)["outbox"]["late"] == 1
    said = [ln for ln in stderr.splitlines() if "past its staleness limit" in ln]
    assert len(said) == 1 and "WARNING" in said[0] and "since before an upgrade" in said[0], said
