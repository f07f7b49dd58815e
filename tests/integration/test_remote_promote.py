"""Rollout actions on a running agent with a real broker: a bundle installed as the shadow
over MQTT is promoted by its sha256 (the agent forecasts with it, ``.previous`` kept, the
shadow no longer run), a second promote is applied without change, another shadow is
dropped (its report goes to null, its file away), a promote naming another bundle changes
nothing, and every state message echoes its request's id and action."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.mqtt import Subscriber
from tests.support.updates import created, patch_manifest, request

PERIOD = 0.2
START = 1_700_000_000


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _label(data: bytes) -> str:
    return f"room@{_sha(data)[:12]}"


def _newer(bundle: bytes, year: str) -> bytes:
    """``bundle`` made in ``year``: another bundle (digest), newer than the converter's."""
    text = created(bundle)
    start = len('"created": "')
    return patch_manifest(bundle, text, text[:start] + year + text[start + 4 :])


@contextmanager
def _feeding(proc: subprocess.Popen[str], lines: list[str]) -> Iterator[None]:
    """Readings on the agent's stdin, one every half period (data time runs at twice the
    clock's pace), until the block ends."""
    stop = threading.Event()

    def feed() -> None:
        assert proc.stdin is not None
        for line in lines:
            if stop.wait(PERIOD / 2):
                return
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                return

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


class Device:
    """Sends model/set requests (MQTT 5, so a response topic can be given) and reads what
    the agent publishes through the test's subscriber."""

    def __init__(self, port: int, prefix: str, sub: Subscriber) -> None:
        self.set_topic, self.sub = f"{prefix}/rp/model/set", sub
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def ask(self, body: dict[str, Any], reply_topic: str | None = None) -> dict[str, Any]:
        """Publish a request with an id; its state message, within 30 s."""
        props = None
        if reply_topic is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic, props.CorrelationData = reply_topic, body["id"].encode()
        info = self.client.publish(self.set_topic, json.dumps(body), qos=1, properties=props)
        info.wait_for_publish(10)
        assert self.sub.wait_for(lambda _: self.state(body["id"]) is not None, 30), body["id"]
        state = self.state(body["id"])
        assert state is not None
        return state

    def state(self, rid: str) -> dict[str, Any] | None:
        for payload in self.sub.payloads("/model/state"):
            state = json.loads(payload)
            if state.get("id") == rid:
                return dict(state)
        return None

    def quality(self) -> dict[str, Any] | None:
        reports = self.sub.payloads("/room/quality")
        return json.loads(reports[-1]) if reports else None

    def forecasts(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.sub.payloads("/room/forecast")]

    def wait_quality(self, ok: Callable[[dict[str, Any]], bool], timeout: float = 20) -> None:
        """Until a quality report (sent every second while forecasts come) satisfies ``ok``."""
        n = len(self.sub.payloads("/room/quality"))

        def fresh(_: object) -> bool:
            reports = self.sub.payloads("/room/quality")[n:]
            return bool(reports) and ok(json.loads(reports[-1]))

        assert self.sub.wait_for(fresh, timeout), self.quality()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_promote_and_drop_the_shadow_over_mqtt(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    live = fast_bundle.read_bytes()
    first, second = _newer(live, "2091"), _newer(live, "2092")
    models = tmp_path / "models"
    models.mkdir()
    (models / "room.tflite").write_bytes(live)
    config = agent_config(
        tmp_path, device="rp", port=mosquitto.port, prefix=topic_prefix,
        mqtt={"protocol": "5"}, homeassistant={"enabled": False},
        updates={"allow_unsigned": True}, quality={"interval_s": 1, "min_samples": 5},
        streams=[stdin_stream("models/room.tflite")],
    )  # fmt: skip
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:2000, 1:]
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/rp/#")
    device = Device(mosquitto.port, topic_prefix, sub)
    log = tmp_path / "agent.log"
    try:
        with log.open("w") as err, start_agent(config, stderr=err) as proc:
            try:
                with _feeding(proc, json_lines(rows, START, PERIOD)):
                    _roll(device, models, live, first, second, topic_prefix)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    finally:
        device.close()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "model update: stream room: promote" in text and "already live" in text, text
    assert f"promoted to live model {_label(first)}" in text and "'p-1'" in text, text
    assert f"shadow {_label(second)} dropped" in text, text
    labels = [f["model"] for f in device.forecasts()]
    swap = labels.index(_label(first))
    assert set(labels[:swap]) == {_label(live)} and set(labels[swap:]) == {_label(first)}
    seqs = [f["seq"] for f in device.forecasts()]
    assert seqs == sorted(seqs)  # one stream of forecasts across the swap


def _roll(
    device: Device, models: Path, live: bytes, first: bytes, second: bytes, prefix: str
) -> None:
    """What a fleet controller does: shadow, promote, retry, shadow, drop, a stale promote."""
    model, shadow = models / "room.tflite", models / "room.tflite.shadow"
    previous = models / "room.tflite.previous"
    assert device.sub.wait_for(lambda _: len(device.forecasts()) >= 3, 30)
    state = device.ask(request(first, shadow=True, id="i-1"))
    assert (state["status"], state["action"], state["shadow"]) == ("applied", "install", True)
    device.wait_quality(lambda q: (q["shadow"] or {}).get("model") == _label(first))

    state = device.ask({"stream": "room", "sha256": _sha(first), "action": "promote", "id": "p-1"})
    assert (state["status"], state["action"], state["sha256"]) == (
        "applied",
        "promote",
        _sha(first),
    )
    assert state["model"] == _label(first) and state["previous"] == _label(live), state
    assert device.sub.wait_for(lambda _: device.forecasts()[-1]["model"] == _label(first), 20)
    device.wait_quality(lambda q: q["model"] == _label(first) and q["shadow"] is None)
    assert model.read_bytes() == first and previous.read_bytes() == live
    assert not shadow.exists()

    state = device.ask({"stream": "room", "sha256": _sha(first), "action": "promote", "id": "p-2"})
    assert state["status"] == "applied" and state["reason"] == "already live", state

    state = device.ask(request(second, shadow=True, id="i-2"))
    assert state["status"] == "applied" and state["id"] == "i-2", state
    device.wait_quality(lambda q: (q["shadow"] or {}).get("model") == _label(second))
    wrong = {"stream": "room", "sha256": "0" * 64, "action": "promote", "id": "p-wrong"}
    state = device.ask(wrong)
    assert state["status"] == "rejected" and _label(second) in state["reason"], state
    assert model.read_bytes() == first and shadow.read_bytes() == second
    reply_topic = f"{prefix}/rp/replies/controller"  # under the subscriber's filter
    drop = {"stream": "room", "sha256": _sha(second), "action": "drop_shadow", "id": "d-1"}
    state = device.ask(drop, reply_topic)
    assert (state["status"], state["action"]) == ("applied", "drop_shadow"), state
    assert device.sub.wait_for(lambda _: bool(device.sub.payloads("/replies/controller")), 10)
    assert [json.loads(p) for p in device.sub.payloads("/replies/controller")] == [state]
    device.wait_quality(lambda q: q["model"] == _label(first) and q["shadow"] is None)
    assert not shadow.exists()

    stale = {"stream": "room", "sha256": _sha(second), "action": "promote", "id": "p-3"}
    state = device.ask(stale)
    assert state["status"] == "rejected" and "no shadow model" in state["reason"], state
    assert model.read_bytes() == first and previous.read_bytes() == live
    assert sorted(p.name for p in models.iterdir()) == ["room.tflite", "room.tflite.previous"]
    assert device.forecasts()[-1]["model"] == _label(first)
