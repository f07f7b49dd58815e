"""Anomalies through a real broker: the agent on the calibrated demo bundle (0.2 s period), fed
the demo's room data with a step of 3 x the temperature's standard deviation, publishes a
retained ``{"anomaly": true, ...}`` on ``.../<stream>/anomaly`` and, once the data is back to
normal, ``{"anomaly": false, ...}``."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.mqtt import Message, Subscriber

pytestmark = pytest.mark.mqtt

PERIOD = 0.2
START = 1_700_000_000
FAULT = (60, 72)  # rows with the step: 12 periods


def _anomalies(sub: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(p) for p in sub.payloads("/anomaly")]


def test_a_step_raises_a_retained_anomaly_that_ends(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    calibrated_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    config = agent_config(
        tmp_path,
        device="a",
        port=mosquitto.port,
        prefix=topic_prefix,
        homeassistant={"enabled": False},
        streams=[stdin_stream(calibrated_bundle)],
    )
    topic = f"{topic_prefix}/a/room/anomaly"
    sub = subscriber_factory(mosquitto.port, topic)
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:220, 1:]
    rows[FAULT[0] : FAULT[1], 0] += 3 * rows[:, 0].std()
    lines = json_lines(rows, START, PERIOD)

    def started(ms: list[Message]) -> bool:
        return any(
            a["anomaly"] and a["reason"] in ("step", "outside_band") for a in _anomalies(sub)
        )

    with start_agent(config) as proc:
        assert proc.stdin is not None
        try:
            proc.stdin.write("".join(lines[: FAULT[1]]))  # clean, then the step
            proc.stdin.flush()
            assert sub.wait_for(started, 30), _anomalies(sub)
            retained = subscriber_factory(mosquitto.port, topic)  # a newcomer sees the state
            assert retained.wait_for(lambda ms: bool(ms), 10), "no retained anomaly state"
            # The retained state is the latest message (the step's, or its end or a dropout
            # if those came first: the data paused here).
            _topic, state, was_retained = retained.messages[0]
            assert was_retained and json.loads(state) in _anomalies(sub), _anomalies(sub)
            proc.stdin.write("".join(lines[FAULT[1] :]))  # back to normal
            proc.stdin.flush()
            assert sub.wait_for(lambda _: any(_ended(a) for a in _anomalies(sub)), 30), _anomalies(
                sub
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    found = _anomalies(sub)
    # At start, before any reading: no anomaly open (a retained true of an earlier run is
    # replaced, and Home Assistant's binary sensor gets a state).
    assert found[0]["anomaly"] is False and found[0]["reason"] is None, found
    step = next(a for a in found if a["anomaly"] and a["reason"] in ("step", "outside_band"))
    fault_start = START + FAULT[0] * PERIOD
    # Raised on the fault's first period, or the next: within two periods.
    assert step["feature"] == "temperature" and step["model"].startswith("room@")
    assert fault_start - 1e-6 <= step["since"] <= fault_start + PERIOD + 1e-6, step
    assert step["time"] <= fault_start + PERIOD + 1e-6 and step["since_iso"].endswith("Z")
    assert step["residual"] > 2 and step["band"][1] < rows[FAULT[0], 0]
    ended = next(a for a in found if _ended(a))
    assert ended["since"] == step["since"] and ended["reason"] == step["reason"], found
    assert fault_start + (FAULT[1] - FAULT[0]) * PERIOD - 1e-6 <= ended["ended"]
    assert "anomaly on temperature" in stderr


def _ended(anomaly: dict[str, Any]) -> bool:
    """The message that ends an anomaly (not the start state, which has no reason)."""
    return not anomaly["anomaly"] and anomaly["reason"] is not None
