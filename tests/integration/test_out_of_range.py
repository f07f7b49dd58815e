"""A running agent and a real Mosquitto: a forecast from a window outside the bundle's
verified range arrives marked ``"out_of_range": true``, the one before it unmarked, and the
metrics (JSON on ``.../metrics``, Prometheus) and the quality report count one."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker, free_port, wait_port
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.manifests import bundle_bytes, demo_manifest
from tests.support.mqtt import Subscriber

pytestmark = pytest.mark.mqtt

PERIOD = 0.2


def test_out_of_range_forecast_is_marked_and_counted(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    data = demo_manifest()  # the demo model, on a fast period, verified on 15..25 °C
    data.update(period_s=PERIOD, verified_range={"temperature": [15.0, 25.0]})
    bundle = tmp_path / "room.tflite"
    bundle.write_bytes(bundle_bytes(data))
    port = free_port()
    config = agent_config(
        tmp_path,
        device="o",
        port=mosquitto.port,
        prefix=topic_prefix,
        homeassistant={"enabled": False},
        metrics={"interval_s": 1, "prometheus_port": port},
        streams=[stdin_stream(bundle)],
    )
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/o/#")
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:25, 1:]
    rows[24, 0] = 40.0  # the 25th period is hotter than anything the model was verified on
    lines = json_lines(rows, 1_700_000_000, PERIOD)
    with start_agent(config) as proc:
        assert proc.stdin is not None
        try:
            assert wait_port(port, 20), "no Prometheus endpoint"
            proc.stdin.write("".join(lines[:24]))  # a full window, in range
            proc.stdin.flush()
            assert sub.wait_for(lambda _: len(sub.payloads("/forecast")) >= 1, 20)
            proc.stdin.write(lines[24])  # the window now holds it
            proc.stdin.flush()
            assert sub.wait_for(lambda _: len(sub.payloads("/forecast")) >= 2, 20)

            def counted(_: object) -> bool:
                metrics = [json.loads(p) for p in sub.payloads("/metrics")]
                return bool(metrics) and metrics[-1]["streams"]["room"]["forecasts"] == 2

            assert sub.wait_for(counted, 20), sub.payloads("/metrics")[-1:]
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr

    forecasts = [json.loads(p) for p in sub.payloads("/forecast")]
    assert [f["out_of_range"] for f in forecasts] == [False, True]  # published, both
    ends = [1_700_000_000 + k * PERIOD for k in (23, 24)]  # in range; with the hot period
    assert [f["window_end"] for f in forecasts] == pytest.approx(ends, abs=1e-3)
    room = json.loads(sub.payloads("/metrics")[-1])["streams"]["room"]
    assert room["forecasts"] == 2 and room["forecasts_out_of_range"] == 1
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    assert samples[("sensorcast_forecasts_out_of_range_total", (("stream", "room"),))] == 1
    assert sub.wait_for(lambda _: bool(sub.payloads("/quality")), 10), "no quality report"
    quality = json.loads(sub.payloads("/quality")[-1])
    assert quality["forecasts"] == 2 and quality["forecasts_out_of_range"] == 1
    assert "2 forecasts (0 batched, 1 out of the model's verified range)" in stderr
