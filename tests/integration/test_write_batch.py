"""A loop turn's publishes go out together (the link's write batch), and nothing about what is
sent changes: all of them, in order, acknowledged and forgotten by the outbox."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sensorcast.agent.config import load_config
from sensorcast.agent.publish.link import INFLIGHT, MqttLink
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.publish.sender import OutboxSender

from tests.support.brokers import MosquittoBroker
from tests.support.configs import agent_config, topic_stream
from tests.support.mqtt import Subscriber
from tests.support.paths import DATA_DIR


def _link(tmp_path: Path, port: int, device: str, protocol: str) -> MqttLink:
    config = agent_config(
        tmp_path,
        device=device,
        port=port,
        mqtt={"protocol": protocol},
        streams=[topic_stream(DATA_DIR / "room_float32.tflite", "x")],
    )
    cfg = load_config(config, env={})
    link = MqttLink(cfg.mqtt, f"sensorcast/{device}/status")
    link.connect()
    return link


@pytest.mark.timeout(60)
def test_publishes_inside_a_batch_are_written_when_it_ends(
    mosquitto: MosquittoBroker, tmp_path: Path, topic_prefix: str
) -> None:
    link = _link(tmp_path, mosquitto.port, "batch-held", "3.1.1")
    sub = Subscriber(mosquitto.port, f"{topic_prefix}/#")
    try:
        with link.batch():
            for i in range(3):
                link.publish(f"{topic_prefix}/m", str(i).encode(), qos=1)
            time.sleep(0.3)  # held: nothing written yet
            assert not sub.messages
        assert sub.wait_for(lambda m: len(m) == 3, 10)
        assert sub.payloads("/m") == [b"0", b"1", b"2"]
    finally:
        link.close()
        sub.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_turn_of_many_forecasts_leaves_in_order_and_is_forgotten_once_acked(
    mosquitto: MosquittoBroker, tmp_path: Path, topic_prefix: str, protocol: str
) -> None:
    link = _link(tmp_path, mosquitto.port, f"batch-{protocol[0]}", protocol)
    sub = Subscriber(mosquitto.port, f"{topic_prefix}/#")
    box = Outbox(tmp_path / "outbox.db")
    sender = OutboxSender(box, link)
    n = INFLIGHT + 50  # more than one window: the rest follows as the acks come back
    try:
        for i in range(n):
            box.put(f"{topic_prefix}/f", str(i).encode(), qos=1)
        deadline = time.monotonic() + 20
        while box.depth and time.monotonic() < deadline:
            sender.pump()
            link.poll(0.05)
        assert box.depth == 0 and sender.sent == n
        assert sub.wait_for(lambda m: len(m) == n, 10)
        assert sub.payloads("/f") == [str(i).encode() for i in range(n)]
    finally:
        link.close()
        box.close()
        sub.close()
