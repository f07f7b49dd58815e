"""Sources wired through the whole agent: a sysfs-style file and a per-feature MQTT topic in
real time, and JSON lines piped to stdin, each ending as forecasts on a real Mosquitto."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent.demo import MosquittoBroker
from agent.forecast import Forecaster
from agent.manifest import read_bundle
from tests.conftest import Subscriber, json_lines

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
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nid = "live"\n[mqtt]\nurl = "mqtt://127.0.0.1:{mosquitto.port}"\n'
        f'topic_prefix = "{topic_prefix}"\n'
        f'[[streams]]\nname = "room"\nmodel = "{fast_bundle}"\nclose_delay_s = 0.05\n'
        f'[streams.inputs.temperature]\ntype = "file"\npath = "{sensor}"\nscale = 0.001\n'
        f"interval_s = 0.05\n"
        f'[streams.inputs.humidity]\ntype = "mqtt_value"\ntopic = "{topic_prefix}/hum"\n'
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
    with subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
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
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nid = "pipe"\n[mqtt]\nurl = "mqtt://127.0.0.1:{mosquitto.port}"\n'
        f'topic_prefix = "{topic_prefix}"\n'
        f'[[streams]]\nname = "room"\nmodel = "{fast_bundle}"\n'
        f'[[streams.sources]]\ntype = "stdin"\n'
    )
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:26, 1:]
    start = 1_700_000_000.0
    lines = "".join(json_lines(rows, start, PERIOD))
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/pipe/room/forecast")
    with subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
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
