"""The MQTT link driven by the caller's loop (no paho thread): a broker that accepts the
TCP connection but never answers is retried, the loop keeps turning while the broker is
away, and what was published meanwhile arrives once it is back."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sensorcast.agent.config import load_config
from sensorcast.agent.publish.link import TCP_CONNECT_S, MqttLink

from tests.support.brokers import MosquittoBroker, run_mosquitto
from tests.support.configs import agent_config, topic_stream
from tests.support.mqtt import Subscriber
from tests.support.paths import DATA_DIR


class SilentServer:
    """Accepts TCP connections on a port and never says a word (a wedged broker)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)

    def close(self) -> None:
        # shutdown() wakes the accept() blocked in the thread; close() alone would not, and
        # the port would keep listening
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)
        for conn in self._conns:
            conn.close()


@pytest.fixture
def own_broker() -> Iterator[MosquittoBroker]:
    """A broker of its own: this test stops and restarts it."""
    yield from run_mosquitto()


def _poll_until(link: MqttLink, pred: Callable[[], object], seconds: float) -> tuple[bool, float]:
    """Poll as the agent's loop does; returns whether ``pred()`` came true and the longest
    single poll (how long the loop was held)."""
    deadline = time.monotonic() + seconds
    longest = 0.0
    while time.monotonic() < deadline:
        started = time.monotonic()
        link.poll(0.05)
        longest = max(longest, time.monotonic() - started)
        if pred():
            return True, longest
    return False, longest


@pytest.mark.timeout(90)
def test_a_silent_broker_is_retried_and_the_loop_keeps_turning(
    own_broker: MosquittoBroker, tmp_path: Path
) -> None:
    config = agent_config(
        tmp_path,
        device="link",
        port=own_broker.port,
        mqtt={"connect_timeout_s": 1, "reconnect_min_s": 0.2, "reconnect_max_s": 0.5},
        streams=[topic_stream(DATA_DIR / "room_float32.tflite", "x")],
    )
    cfg = load_config(config, env={})
    link = MqttLink(cfg.mqtt, "sensorcast/link/status")
    link.connect()
    assert link.connected
    own_broker.stop()
    ok, _ = _poll_until(link, lambda: not link.connected, 10)
    assert ok, "the lost broker was not noticed"
    silent = SilentServer(own_broker.port)
    try:
        # A QoS 1 message published while the broker is away waits in paho for the reconnect.
        link.publish("sensorcast/link/test", b"while away", qos=1)
        ok, longest = _poll_until(link, lambda: silent.accepted >= 2, 15)
        assert ok, "a reconnect that got no CONNACK was not retried"
        assert not link.connected
        assert longest < TCP_CONNECT_S + 1.0, f"one poll held the loop {longest:.1f} s"
    finally:
        silent.close()
    own_broker.start()
    sub = Subscriber(own_broker.port, "sensorcast/link/test")
    try:
        ok, _ = _poll_until(link, lambda: link.connected, 20)
        assert ok, "no reconnect once the broker was back"
        ok, _ = _poll_until(link, lambda: sub.messages, 10)
        assert ok and sub.messages[0][1] == b"while away"
    finally:
        link.close()
        sub.close()
    assert link.socket() is None
