"""Sources wired through the whole agent: a sysfs-style file and a per-feature MQTT topic in
real time, and JSON lines piped to stdin, each ending as forecasts on a real Mosquitto."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import threading
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
from tests.support.configs import agent_config, stdin_stream
from tests.support.mqtt import Subscriber

PERIOD = 0.2  # seconds: the demo model relabelled with a fast grid, so a window fills in 5 s


def test_file_and_mqtt_value_inputs_in_real_time(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    sensor = tmp_path / "temp1_input"
    sensor.write_text("21500\n")  # millidegrees, as hwmon and IIO report them
    inputs = {
        "temperature": {"type": "file", "path": sensor, "scale": 0.001, "interval_s": 0.05},
        "humidity": {"type": "mqtt_value", "topic": f"{topic_prefix}/hum"},
    }
    config = agent_config(
        tmp_path,
        device="live",
        port=mosquitto.port,
        prefix=topic_prefix,
        streams=[{"name": "room", "model": fast_bundle, "close_delay_s": 0.05, "inputs": inputs}],
    )
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/live/room/forecast")
    feeder = paho.Client(CallbackAPIVersion.VERSION2)
    feeder.connect("127.0.0.1", mosquitto.port)
    feeder.loop_start()
    stop = threading.Event()

    def publish_humidity() -> None:
        while not stop.is_set():
            feeder.publish(f"{topic_prefix}/hum", b"47.5", qos=0)
            stop.wait(0.05)

    thread = threading.Thread(target=publish_humidity, daemon=True)
    with start_agent(config, stdin=subprocess.DEVNULL) as proc:
        thread.start()
        try:
            assert sub.wait_for(lambda ms: len(ms) >= 3, timeout=30), "no forecasts"
        finally:
            stop.set()
            thread.join(5)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=20)
    feeder.loop_stop()
    feeder.disconnect()
    assert proc.returncode == 0, stderr
    forecast = json.loads(sub.payloads("/forecast")[-1])
    assert forecast["period_s"] == PERIOD and len(forecast["values"]) == 12
    assert all(math.isfinite(v[0]) and 10 < v[0] < 35 for v in forecast["values"])  # °C
    # A constant room at 21.5 °C / 47.5 %: the forecast is what the model says for that window.
    expected = Forecaster(read_bundle(fast_bundle)).predict(
        np.tile(np.array([21.5, 47.5], dtype=np.float32), (24, 1))
    )
    np.testing.assert_allclose([v[0] for v in forecast["values"]], expected[:, 0], atol=1e-3)


def test_stdin_json_lines(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    config = agent_config(
        tmp_path,
        device="pipe",
        port=mosquitto.port,
        prefix=topic_prefix,
        streams=[stdin_stream(fast_bundle)],
    )
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:26, 1:]
    start = 1_700_000_000.0
    lines = "".join(json_lines(rows, start, PERIOD))
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/pipe/room/forecast")
    with start_agent(config) as proc:
        assert proc.stdin is not None
        proc.stdin.write(lines + "this is not json\n")
        proc.stdin.flush()
        try:
            assert sub.wait_for(lambda ms: len(ms) >= 3, timeout=30), "no forecasts"
            time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    forecasts = [json.loads(p) for p in sub.payloads("/forecast")]
    assert len(forecasts) == 3  # windows ending at rows 23, 24, 25
    forecaster = Forecaster(read_bundle(fast_bundle))
    for k, f in enumerate(forecasts):
        window = rows[k : k + 24].astype(np.float32)
        np.testing.assert_allclose(
            [v[0] for v in f["values"]], forecaster.predict(window)[:, 0], atol=1e-4
        )
    assert "not_json" in stderr
