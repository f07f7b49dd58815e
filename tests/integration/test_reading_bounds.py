"""Readings that are finite as a double but not as float32 (``1e300``), and timestamps before
2000 (``ts = -5``), through every source kind of a real agent on a real Mosquitto: each is
rejected and counted (``out_of_range``, ``too_old``), and never reaches a forecast."""

from __future__ import annotations

import ast
import json
import math
import re
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import read_bundle

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream, topic_stream
from tests.support.mqtt import Subscriber

START = 1_700_000_000.0  # Unix s: the stdin stream's first reading
PERIOD = 300.0  # the demo model's period, seconds
HUGE = '{"temperature": 1e300, "humidity": -1e39}'  # finite doubles, infinite as float32
OLD = '{"ts": -5, "temperature": 20.0, "humidity": 40.0}'


def _summaries(stderr: str) -> dict[str, dict[str, int]]:
    """Each stream's rejected-reading counts from the agent's shutdown summary."""
    out = {}
    for name, rejected in re.findall(r"stream (\w+): \d+ readings accepted, rejected (.*?), \d+ f",
                                     stderr):  # fmt: skip
        out[name] = {} if rejected == "none" else ast.literal_eval(rejected)
    return out


def test_out_of_range_values_and_old_timestamps_are_rejected_on_every_source(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    model = demo_dir / "room.tflite"
    sensor = tmp_path / "temp1_input"
    sensor.write_text("1e300\n")
    huge_cmd = [sys.executable, "-c", f"print({HUGE!r})"]
    old_cmd = [sys.executable, "-c", f"print({OLD!r})"]
    inputs = {
        "temperature": {"type": "file", "path": sensor, "interval_s": 0.1},
        "humidity": {"type": "mqtt_value", "topic": f"{topic_prefix}/in/hum"},
    }
    commands = [
        {"type": "command", "command": cmd, "interval_s": 0.1} for cmd in (huge_cmd, old_cmd)
    ]
    config = agent_config(
        tmp_path,
        device="bounds",
        port=mosquitto.port,
        prefix=topic_prefix,
        streams=[
            stdin_stream(model, name="pipe"),
            topic_stream(model, f"{topic_prefix}/in/json", name="json"),
            {"name": "mix", "model": model, "inputs": inputs},
            {"name": "cmd", "model": model, "sources": commands},
        ],
    )
    # The stdin stream: real rows with bad lines among them; the forecasts must be those of
    # the real rows alone.
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:26, 1:]
    lines = [OLD + "\n"]  # the very first reading: nothing to be out of order with
    for j, line in enumerate(json_lines(rows, START, PERIOD)):
        lines.append(line)
        if j in (9, 13):  # one second into row j's period: a mean with it would be infinite
            bad = {"ts": START + j * PERIOD + 1, "temperature": 1e300, "humidity": -3.5e38}
            lines.append(json.dumps(bad) + "\n")
    status = subscriber_factory(mosquitto.port, f"{topic_prefix}/bounds/status")
    forecasts = subscriber_factory(mosquitto.port, f"{topic_prefix}/bounds/pipe/forecast")
    feeder = paho.Client(CallbackAPIVersion.VERSION2)
    feeder.connect("127.0.0.1", mosquitto.port)
    feeder.loop_start()
    with start_agent(config) as proc:
        assert proc.stdin is not None
        try:
            assert status.wait_for(lambda ms: bool(ms) and ms[-1][1] == b"online", 30)
            time.sleep(0.5)  # subscriptions are made with the connection; let them settle
            for topic, payload in (
                ("in/json", HUGE),
                ("in/json", OLD),
                ("in/json", '{"ts": 0, "temperature": 20.0, "humidity": 40.0}'),
                ("in/hum", "1e300"),
                ("in/hum", '{"ts": -5, "value": 40.0}'),
            ):
                feeder.publish(f"{topic_prefix}/{topic}", payload, qos=1).wait_for_publish(10)
            proc.stdin.write("".join(lines))
            proc.stdin.flush()
            assert forecasts.wait_for(lambda ms: len(ms) >= 3, 30), "no forecasts"
            time.sleep(1.0)  # the polled sources read every 0.1 s; MQTT messages arrive
        finally:
            feeder.loop_stop()
            feeder.disconnect()
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    counts = _summaries(stderr)
    assert counts["pipe"].get("out_of_range") == 4 and counts["pipe"].get("too_old") == 2, counts
    assert counts["json"].get("out_of_range") == 2 and counts["json"].get("too_old") == 4, counts
    assert counts["mix"].get("out_of_range", 0) >= 2 and counts["mix"].get("too_old") == 1, counts
    assert counts["cmd"].get("out_of_range", 0) >= 2 and counts["cmd"].get("too_old", 0) >= 2, (
        counts
    )
    published = [json.loads(p) for p in forecasts.payloads("/forecast")]
    assert len(published) == 3  # windows ending at rows 23, 24, 25: the bad lines added none
    forecaster = Forecaster(read_bundle(model))
    for k, f in enumerate(published):
        assert all(math.isfinite(v[0]) for v in f["values"])
        expected = forecaster.predict(rows[k : k + 24].astype(np.float32))[:, 0]
        np.testing.assert_allclose([v[0] for v in f["values"]], expected, atol=1e-4)
