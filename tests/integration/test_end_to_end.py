"""Readings in over a real Mosquitto -> the agent -> forecasts out, equal to Keras."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import convert_demo
from tests.support.configs import agent_config, topic_stream
from tests.support.mqtt import Subscriber

ROWS = 30


@pytest.fixture(scope="module")
def float32_bundle(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model converted to float32 here, so any difference from Keras is the agent's."""
    out = tmp_path_factory.mktemp("bundle") / "room.tflite"
    assert convert_demo(out, "--quantize", "float32", "--period", "300") == 0
    return out


@pytest.fixture
def agent_proc(
    tmp_path: Path, mosquitto: MosquittoBroker, topic_prefix: str, float32_bundle: Path
) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    config = agent_config(
        tmp_path,
        device="e2e",
        port=mosquitto.port,
        prefix=topic_prefix,
        streams=[topic_stream(float32_bundle, f"{topic_prefix}/in/room")],
    )

    def start() -> subprocess.Popen[str]:
        proc = start_agent(config, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def _publisher(port: int) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"feeder-{time.monotonic_ns()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _keras_forecast(demo_dir: Path, windows: np.ndarray) -> np.ndarray:
    import keras

    norm = json.loads((demo_dir / "norm.json").read_text())
    mean = np.array([norm["temperature"]["mean"], norm["humidity"]["mean"]])
    std = np.array([norm["temperature"]["std"], norm["humidity"]["std"]])
    model = keras.models.load_model(demo_dir / "room.keras", compile=False)
    y = model.predict(((windows - mean) / std).astype("float32"), verbose=0)
    return np.asarray(y * std[0] + mean[0])


def test_forecasts_on_mqtt_equal_keras_and_bad_readings_are_counted(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    demo_dir: Path,
    agent_proc: Callable[[], subprocess.Popen[str]],
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/#")
    proc = agent_proc()
    status_topic = f"{topic_prefix}/e2e/status"
    assert sub.wait_for(
        lambda ms: (
            (status_topic, b"online", False) in ms
            or any(t == status_topic and p == b"online" for t, p, _ in ms)
        ),
        timeout=30,
    ), proc.stderr

    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:ROWS]
    feeder = _publisher(mosquitto.port)
    topic = f"{topic_prefix}/in/room"
    bad: list[Any] = [
        b"not json",
        b"[1, 2]",
        json.dumps({"ts": "yesterday", "temperature": 1, "humidity": 2}).encode(),
        json.dumps({"ts": rows[5, 0] + 1, "temperature": "warm", "humidity": None}).encode(),
        json.dumps({"ts": rows[6, 0] + 1, "temperature": math.nan, "humidity": math.inf}).encode(),
    ]
    for i, (ts, temp, hum) in enumerate(rows):
        payload = json.dumps({"ts": ts, "temperature": temp, "humidity": hum, "room": "lab"})
        feeder.publish(topic, payload, qos=1).wait_for_publish(5)
        if i < len(bad):
            feeder.publish(topic, bad[i], qos=1).wait_for_publish(5)
    feeder.loop_stop()
    feeder.disconnect()

    expected_count = ROWS - 24 + 1  # windows ending at rows 23..29
    forecast_topic = f"{topic_prefix}/e2e/room/forecast"
    ok = sub.wait_for(lambda ms: sum(t == forecast_topic for t, _, _ in ms) >= expected_count, 30)
    assert ok, [json.loads(p)["window_end"] for p in sub.payloads("/room/forecast")]
    forecasts = [json.loads(p) for p in sub.payloads("/room/forecast")]
    assert [f["seq"] for f in forecasts] == list(range(expected_count))

    by_ts = {float(ts): i for i, ts in enumerate(rows[:, 0])}
    windows = []
    for f in forecasts:
        assert f["device"] == "e2e" and f["stream"] == "room" and f["model"].startswith("room@")
        assert f["targets"] == ["temperature"] and f["period_s"] == 300.0
        assert f["steps"] == [f["window_end"] + 300.0 * (k + 1) for k in range(12)]
        end = by_ts[f["window_end"]]
        windows.append(rows[end - 23 : end + 1, 1:])
    expected = _keras_forecast(demo_dir, np.stack(windows))
    got = np.array([[v[0] for v in f["values"]] for f in forecasts])
    np.testing.assert_allclose(got, expected, atol=1e-4)  # °C

    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert sub.wait_for(lambda ms: ms[-1][0] == status_topic and ms[-1][1] == b"offline", 10)
    assert "Traceback" not in stderr
    summary = [ln for ln in stderr.splitlines() if "readings accepted" in ln][-1]
    for reason in (
        "not_json",
        "not_object",
        "bad_timestamp",
        "bad_value",
        "missing_feature",
        "non_finite",
    ):
        assert reason in summary, summary
    assert f"{expected_count} forecasts" in summary


def test_will_says_offline_when_the_agent_dies(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    agent_proc: Callable[[], subprocess.Popen[str]],
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/e2e/status")
    proc = agent_proc()
    assert sub.wait_for(lambda ms: bool(ms) and ms[-1][1] == b"online", 30)
    proc.kill()
    assert sub.wait_for(lambda ms: ms[-1][1] == b"offline", 15)
    # retained: a late subscriber also learns the agent is offline
    late = subscriber_factory(mosquitto.port, f"{topic_prefix}/e2e/status")
    assert late.wait_for(lambda ms: bool(ms) and ms[-1][1:] == (b"offline", True), 10)
