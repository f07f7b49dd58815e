"""``[mqtt] url`` as a list of brokers, with two real Mosquittos: the agent starts on the
first broker that accepts, and when its broker goes away it fails over to the next one with
its persistent session's semantics: every forecast reaches a broker (the outbox holds what
was not acknowledged, paho sends what was in flight to the new broker), and its
subscriptions (``model/set``) work there."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from sensorcast.agent.config import load_config
from sensorcast.agent.errors import PublishError
from sensorcast.agent.publish.link import MqttLink

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker, free_port, run_mosquitto
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.mqtt import Subscriber

PERIOD = 0.2
START = 1_700_000_000
WINDOW = 24  # fast_bundle's: the first forecast comes with the 24th reading


def _forecasts(readings: int) -> set[int]:
    """The ``seq`` of every forecast ``readings`` make: one per reading from the window's
    last on, counted from 0."""
    return set(range(readings - WINDOW + 1))


@pytest.fixture
def second() -> Iterator[MosquittoBroker]:
    """Another broker (the session's ``mosquitto`` is the first of some tests)."""
    yield from run_mosquitto()


@pytest.fixture
def first() -> Iterator[MosquittoBroker]:
    """A broker of this test's own: it is stopped mid-run."""
    yield from run_mosquitto()


@pytest.fixture
def rows(demo_dir: Path) -> np.ndarray:
    return np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:160, 1:]


def _url(port: int) -> str:
    return f"mqtt://127.0.0.1:{port}"


def _seqs(sub: Subscriber) -> list[int]:
    return [json.loads(p)["seq"] for p in sub.payloads("/room/forecast")]


def _stop(proc: subprocess.Popen[str], log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    text = log.read_text()
    assert proc.returncode == 0, text
    return text


def test_none_of_the_brokers_accepting_is_one_line_naming_each(tmp_path: Path) -> None:
    dead = (free_port(), free_port())
    config = agent_config(
        tmp_path, device="f0", mqtt={"url": [_url(p) for p in dead], "connect_timeout_s": 2},
        streams=[stdin_stream("room.tflite")],
    )  # fmt: skip
    (tmp_path / "room.tflite").write_bytes(b"x")  # never loaded: the link alone
    link = MqttLink(load_config(config, env={}).mqtt, "f0/status")
    with pytest.raises(PublishError) as info:
        link.connect()
    text = str(info.value)
    assert text.startswith("no MQTT broker of mqtt.url accepted the connection: (1) cannot reach")
    for n, port in enumerate(dead, 1):
        assert f"({n}) cannot reach MQTT broker 127.0.0.1:{port} ({n} of 2) (mqtt.url)" in text
    assert "\n" not in text and not link.connected


def _poll_until(link: MqttLink, pred: Callable[[], object], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        link.poll(0.05)
        if pred():
            return True
    return False


def test_the_link_fails_over_in_order_and_wraps_around(
    first: MosquittoBroker, second: MosquittoBroker, tmp_path: Path
) -> None:
    """[silent, first, second]: a broker that never answers costs connect_timeout_s, a
    stopped one a refused connect, and the list wraps around; no backoff within a round."""
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody answers
    urls = [_url(silent.getsockname()[1]), _url(first.port), _url(second.port)]
    config = agent_config(
        tmp_path, device="fl", streams=[stdin_stream("room.tflite")],
        mqtt={"url": urls, "connect_timeout_s": 1, "reconnect_min_s": 1, "reconnect_max_s": 8},
    )  # fmt: skip
    (tmp_path / "room.tflite").write_bytes(b"x")  # never loaded: the link alone
    link = MqttLink(load_config(config, env={}).mqtt, "fl/status")
    try:
        link.connect()  # the silent one first: no CONNACK in 1 s, then the first broker
        assert (link.broker, link.failovers) == (f"127.0.0.1:{first.port}", 0)
        sub = Subscriber(second.port, "fl/x")
        first.stop()
        assert _poll_until(link, lambda: not link.connected, 10)
        link.publish("fl/x", b"while away", qos=1)  # paho holds it for the next broker
        # after reconnect_min_s: first (refused), then at once the second broker
        assert _poll_until(link, lambda: link.connected, 15)
        assert (link.broker, link.failovers) == (f"127.0.0.1:{second.port}", 1)
        assert sub.wait_for(lambda ms: [p for _, p, _ in ms] == [b"while away"], 10)
        sub.close()
        first.start()
        second.stop()
        # second (refused), the silent one wrapping around (1 s), then the first again
        started = time.monotonic()
        assert _poll_until(link, lambda: link.connected, 20)
        assert (link.broker, link.failovers) == (f"127.0.0.1:{first.port}", 2)
        # 1 s after the loss, the silent broker's 1 s, no backoff between the brokers of a
        # round (backoff there, doubling from 1 s, would take 1 + 2 + 1 + 4 s)
        assert time.monotonic() - started < 1 + 1 + 2.5
    finally:
        link.close()
        silent.close()


def test_the_first_broker_down_at_start_the_agent_runs_on_the_second(
    second: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    rows: np.ndarray,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    down = free_port()
    config = agent_config(
        tmp_path, device="f1", prefix=topic_prefix, homeassistant={"enabled": False},
        mqtt={"url": [_url(down), _url(second.port)], "protocol": "5"},
        streams=[stdin_stream(fast_bundle)],
    )  # fmt: skip
    sub = subscriber_factory(second.port, f"{topic_prefix}/f1/#")
    log = tmp_path / "agent.log"
    with log.open("w") as err, start_agent(config, stderr=err) as proc:
        try:
            assert proc.stdin is not None
            proc.stdin.write("".join(json_lines(rows[:40], START, PERIOD)))
            proc.stdin.flush()
            assert sub.wait_for(lambda _: set(_seqs(sub)) == _forecasts(40), 30), log.read_text()
        finally:
            text = _stop(proc, log)
    assert f"connected to MQTT broker 127.0.0.1:{second.port} (2 of 2)" in text, text
    assert sorted(_seqs(sub)) == sorted(_forecasts(40))  # each once


def _feeder(proc: subprocess.Popen[str], lines: list[str], stop: threading.Event) -> None:
    """Readings as a sensor sends them: a few at a time, every few tens of milliseconds."""
    assert proc.stdin is not None
    for i in range(0, len(lines), 2):
        if stop.is_set():
            return
        proc.stdin.write("".join(lines[i : i + 2]))
        proc.stdin.flush()
        time.sleep(0.04)


@pytest.mark.timeout(90)
def test_failover_mid_run_loses_no_forecast_and_keeps_the_subscriptions(
    first: MosquittoBroker,
    second: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    rows: np.ndarray,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    config = agent_config(
        tmp_path, device="f2", prefix=topic_prefix, homeassistant={"enabled": False},
        mqtt={"url": [_url(first.port), _url(second.port)], "reconnect_min_s": 0.2,
              "reconnect_max_s": 1, "connect_timeout_s": 2},
        streams=[stdin_stream(fast_bundle)],
    )  # fmt: skip
    # Subscribed before the agent starts: each sees everything its broker took.
    on_first = subscriber_factory(first.port, f"{topic_prefix}/f2/#")
    on_second = subscriber_factory(second.port, f"{topic_prefix}/f2/#")
    lines = json_lines(rows, START, PERIOD)
    stop_feeding = threading.Event()
    log = tmp_path / "agent.log"
    with log.open("w") as err, start_agent(config, stderr=err) as proc:
        feeder = threading.Thread(target=_feeder, args=(proc, lines, stop_feeding), daemon=True)
        try:
            assert on_first.wait_for(lambda ms: any(p == b"online" for _, p, _ in ms), 20)
            feeder.start()
            assert on_first.wait_for(lambda _: len(_seqs(on_first)) >= 20, 30), log.read_text()
            first.stop()  # readings keep coming: forecasts are being published right now
            assert on_second.wait_for(lambda ms: any(p == b"online" for _, p, _ in ms), 20)
            # model/set, subscribed again on the new broker: the request is answered there.
            on_second.client.publish(f"{topic_prefix}/f2/model/set", b"{not json", qos=1)
            assert on_second.wait_for(lambda _: bool(on_second.payloads("/model/state")), 20)
            feeder.join(30)
            every = _forecasts(len(rows))
            assert on_second.wait_for(
                lambda _: set(_seqs(on_first) + _seqs(on_second)) >= every, 30
            )
        finally:
            stop_feeding.set()
            text = _stop(proc, log)
    assert f"connected to MQTT broker 127.0.0.1:{second.port} (2 of 2)" in text, text
    seqs = _seqs(on_first) + _seqs(on_second)
    missing = sorted(every - set(seqs))
    assert not missing, f"forecasts lost: {missing}"
    assert set(seqs) == every and _seqs(on_second), sorted(set(seqs) - every)
    state: dict[str, Any] = json.loads(on_second.payloads("/model/state")[0])
    assert state["status"] == "rejected", state
