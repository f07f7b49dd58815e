"""MQTT 5 model/set requests with a real broker and agent: the state message for a request
also goes to the request's response topic with its correlation data, whatever the outcome;
a ``"shadow": true`` request installs the bundle as the stream's shadow (the live model
stays), which the agent then runs beside the live one."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.configs import agent_config, topic_stream
from tests.support.mqtt import Subscriber
from tests.support.updates import NEWER, created, patch_manifest, request

#: The same model as NEWER, made a minute later: another bundle that fits the stream.
LIVE = NEWER.read_bytes()
CANDIDATE = patch_manifest(LIVE, created(LIVE), created(LIVE).replace("00:37:36", "00:38:36"))


class Client5:
    """A real MQTT 5 client: sends requests with a response topic and correlation data, and
    collects ``(payload, correlation data)`` of what arrives on that topic."""

    def __init__(self, port: int, reply_topic: str) -> None:
        self.reply_topic = reply_topic
        self.answers: list[tuple[dict[str, Any], bytes | None]] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(reply_topic, qos=1)
        assert subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        corr = getattr(msg.properties, "CorrelationData", None)
        with self._cond:
            self.answers.append((json.loads(msg.payload), None if corr is None else bytes(corr)))
            self._cond.notify_all()

    def ask(self, topic: str, body: bytes, correlation: bytes) -> tuple[dict[str, Any], bytes]:
        """Publish a request; the answer with this correlation data, within 30 s."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = correlation
        self.client.publish(topic, body, qos=1, properties=props).wait_for_publish(10)

        def mine() -> list[tuple[dict[str, Any], bytes | None]]:
            return [a for a in self.answers if a[1] == correlation]

        with self._cond:
            assert self._cond.wait_for(lambda: bool(mine()), 30), self.answers
            ((state, corr),) = mine()
        assert corr is not None
        return state, corr

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_model_set_answers_on_the_response_topic_and_installs_shadows(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "room.tflite").write_bytes(LIVE)
    config = agent_config(
        tmp_path, device="r5", port=mosquitto.port, prefix=topic_prefix,
        mqtt={"protocol": "5"}, homeassistant={"enabled": False},
        updates={"allow_unsigned": True}, streams=[topic_stream("models/room.tflite", "in")],
    )  # fmt: skip
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/r5/#")
    client = Client5(mosquitto.port, f"{topic_prefix}/replies/me")
    set_topic = f"{topic_prefix}/r5/model/set"
    log = tmp_path / "agent.log"
    try:
        with log.open("w") as err, start_agent(config, stderr=err) as proc:
            try:
                assert sub.wait_for(lambda ms: any(p == b"online" for _, p, _ in ms), 20)
                body = json.dumps(request(CANDIDATE, shadow=True)).encode()
                state, corr = client.ask(set_topic, body, b"\x00\xffreq-1")
                assert corr == b"\x00\xffreq-1"
                assert state["status"] == "applied" and state["shadow"] is True, state
                # A refusal is answered too, with its own correlation data.
                state, corr = client.ask(set_topic, b"{not json", b"req-2")
                assert state["status"] == "rejected" and "not JSON" in state["reason"]
                # The same messages on model/state (retained), without a correlation there.
                assert sub.wait_for(lambda _: len(sub.payloads("/model/state")) >= 2, 10)
                assert sub.wait_for(lambda _: "running beside" in log.read_text(), 10)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    finally:
        client.close()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert (models / "room.tflite").read_bytes() == LIVE  # the live model stays
    assert (models / "room.tflite.shadow").read_bytes() == CANDIDATE
    assert not (models / "room.tflite.previous").exists()
    assert "installed for stream room as its shadow" in text, text
    assert "model reloaded" not in text  # nothing swapped in live
    states = [json.loads(p) for p in sub.payloads("/model/state")]
    assert [s["status"] for s in states] == ["applied", "rejected"]
    assert [a[0] for a in client.answers] == states  # the same bodies, in the same order
