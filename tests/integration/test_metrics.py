"""Metrics of a running agent through real channels: Prometheus' text endpoint (scraped over
HTTP and parsed with prometheus-client's own parser) and JSON on ``<prefix>/<device>/metrics``."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.support.agents import run_cli, start_agent
from tests.support.brokers import MosquittoBroker, free_port, wait_port
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream, topic_stream
from tests.support.mqtt import Subscriber
from tests.support.paths import DEMO_DIR

PERIOD = 0.2


def test_prometheus_endpoint_and_mqtt_metrics(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    port = free_port()
    config = agent_config(
        tmp_path,
        device="m",
        port=mosquitto.port,
        prefix=topic_prefix,
        homeassistant={"enabled": False},
        metrics={"interval_s": 1, "prometheus_port": port},
        streams=[stdin_stream(fast_bundle)],
    )
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/m/metrics")
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:30, 1:]
    lines = json_lines(rows, 1_700_000_000, PERIOD)
    lines.insert(5, '{"ts": 1700000001.0, "temperature": "warm"}\n')  # a bad reading
    with start_agent(config) as proc:
        assert proc.stdin is not None
        try:
            assert wait_port(port, 20), "no Prometheus endpoint"
            proc.stdin.write("".join(lines))
            proc.stdin.flush()
            want = len(rows) - 23
            assert sub.wait_for(
                lambda ms: (
                    bool(ms) and json.loads(ms[-1][1])["streams"]["room"]["forecasts"] >= want
                ),
                20,
            ), sub.messages[-1:]
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    room = (("stream", "room"),)
    assert samples[("sensorcast_forecasts_total", room)] == want
    assert samples[("sensorcast_readings_accepted_total", room)] == 2 * len(rows)
    assert samples[("sensorcast_inference_seconds_count", room)] == want
    assert samples[("sensorcast_inference_seconds_bucket", (("le", "+Inf"), *room))] == want
    assert 0 < samples[("sensorcast_inference_seconds_sum", room)] < want * 0.05
    assert samples[("sensorcast_connected", ())] == 1
    assert samples[("sensorcast_outbox_depth", ())] >= 0
    last = samples[("sensorcast_last_forecast_timestamp_seconds", room)]
    assert abs(last - (1_700_000_000 + 29 * PERIOD)) < 1e-3
    info = [k for k in samples if k[0] == "sensorcast_model_info"]
    assert info and dict(info[0][1])["model"].startswith("room@")
    rejected = {
        dict(k[1])["reason"]: v
        for k, v in samples.items()
        if k[0] == "sensorcast_readings_rejected_total"
    }
    assert sum(rejected.values()) == 2, rejected  # "warm" is no number, humidity is missing

    report = json.loads(sub.messages[-1][1])
    assert report["device"] == "m" and report["connected"] is True
    assert report["outbox"]["degraded"] is None and report["streams"]["room"]["gaps"] == 0


def test_a_busy_prometheus_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = agent_config(
            tmp_path,
            device="m",
            port=free_port(),
            metrics={"prometheus_port": port},
            streams=[topic_stream(DEMO_DIR / "room.tflite", "x")],
        )
        done = run_cli("run", "--config", str(config), timeout=60)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert f"metrics.prometheus_port {port}" in last and "pick a free port" in last
