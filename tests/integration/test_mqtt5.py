"""MQTT 5 against real brokers: a forecast the broker refuses (Mosquitto with an ACL) is
counted and logged, not passed off as sent; a broker that only speaks MQTT 3.1.1 (amqtt) is
named as such, not blamed on the password."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests.support.agents import run_cli, start_agent
from tests.support.brokers import (
    AmqttBroker,
    MosquittoBroker,
    run_amqtt,
    run_mosquitto,
)
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream, topic_stream
from tests.support.mqtt import Subscriber

PERIOD = 0.2


@pytest.fixture
def acl_broker(tmp_path: Path, topic_prefix: str) -> Iterator[MosquittoBroker]:
    """Anonymous clients may do anything but publish forecasts."""
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite #\ntopic deny {topic_prefix}/+/+/forecast\n")
    acl.chmod(0o644)
    yield from run_mosquitto(f"listener {{port}} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n")


@pytest.mark.timeout(90)
def test_forecasts_the_broker_refuses_are_counted_and_logged_not_sent(
    acl_broker: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    """Mosquitto answers each forecast's PUBLISH with PUBACK reason 135 (not authorized):
    the agent counts it as refused (summary, metrics), logs it with the topic, and does not
    keep retrying it (the outbox ends empty)."""
    config = agent_config(
        tmp_path,
        device="acl5",
        port=acl_broker.port,
        prefix=topic_prefix,
        mqtt={"protocol": "5"},
        metrics={"interval_s": 1},
        streams=[stdin_stream(fast_bundle)],
    )
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:27, 1:]
    sub = subscriber_factory(acl_broker.port, f"{topic_prefix}/acl5/#")
    forecasts = len(rows) - 23
    with start_agent(config) as proc:
        assert proc.stdin is not None
        try:
            proc.stdin.write("".join(json_lines(rows, 1_700_000_000, PERIOD)))
            proc.stdin.flush()

            def refused_all(_ms: object) -> bool:
                metrics = sub.payloads("/metrics")
                return bool(metrics) and json.loads(metrics[-1])["outbox"]["refused"] == forecasts

            assert sub.wait_for(refused_all, 30), sub.payloads("/metrics")[-1:]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert sub.payloads("/forecast") == []  # the ACL held
    assert sub.payloads("/status")  # while the rest went through
    summary = re.findall(
        r"outbox: (\d+) queued .*?, (\d+) sent, .*?(\d+) refused by the broker", stderr
    )
    # what the outbox sent besides forecasts: the stream's anomaly state (a dropout when the
    # readings stop), which the ACL allows
    others = len(sub.payloads("/anomaly"))
    assert summary and summary[-1] == ("0", str(others), str(forecasts)), summary
    warnings = [ln for ln in stderr.splitlines() if "refused the message" in ln]
    assert len(warnings) == 1 and "WARNING" in warnings[0], warnings  # rate-limited
    assert f"{topic_prefix}/acl5/room/forecast" in warnings[0]
    assert "Not authorized" in warnings[0] and "135" in warnings[0]
    metrics = json.loads(sub.payloads("/metrics")[-1])["outbox"]
    assert metrics["sent"] <= others and metrics["depth"] == 0


@pytest.fixture
def amqtt_broker() -> Iterator[AmqttBroker]:
    """amqtt (an MQTT 3.1.1-only broker, the ``demo`` extra) in a process of its own."""
    yield from run_amqtt()


def test_mqtt5_to_a_broker_that_only_speaks_3_1_1_says_so(
    amqtt_broker: AmqttBroker, demo_dir: Path, tmp_path: Path
) -> None:
    """amqtt does not answer an MQTT 5 CONNECT that has properties (the agent's will has)
    at all: the agent asks again in 3.1.1 and, answered, names the protocol."""

    def config(protocol: str | None) -> Path:
        return agent_config(
            tmp_path,
            device="old",
            port=amqtt_broker.port,
            mqtt={"connect_timeout_s": 5, "protocol": protocol},
            streams=[topic_stream(demo_dir / "room.tflite", "in/room")],
        )

    mqtt5 = config("5")
    started = time.monotonic()
    done = run_cli("run", "--config", str(mqtt5), timeout=60)
    assert done.returncode == 1 and time.monotonic() - started < 30, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("sensorcast: error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "does not speak MQTT 5" in errors[0], errors
    assert 'mqtt.protocol = "3.1.1"' in errors[0], errors
    assert "password" not in errors[0] and "is it an MQTT broker" not in errors[0], errors
    # The same broker with the protocol it speaks: the agent comes online.
    with start_agent(config(None)) as proc:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        for line in proc.stderr:
            if " online as old" in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0 and " online as old" in line, line + rest
