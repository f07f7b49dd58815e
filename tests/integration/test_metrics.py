"""Metrics of a running agent through real channels: Prometheus' text endpoint (scraped over
HTTP and parsed with prometheus-client's own parser) and JSON on ``<prefix>/<device>/metrics``."""

from __future__ import annotations

import json
import platform
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from sensorcast.agent import __version__

from tests.support.agents import run_cli, start_agent
from tests.support.brokers import MosquittoBroker, free_port, wait_port
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream, topic_stream
from tests.support.host import missing_tool
from tests.support.mqtt import Message, Subscriber
from tests.support.paths import DEMO_DIR

PERIOD = 0.2
ROWS = 160  #: Real room readings replayed: enough actuals for coverage and skill at every step.


def test_prometheus_endpoint_and_mqtt_metrics(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    calibrated_bundle: Path,
    fast_bundle: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    """A replay of real room data: the scrape passes ``promtool check metrics`` and has the
    standard process and platform families, the build info, and per stream the interval's
    level and coverage, the skill against the last value, anomaly and fallback state, the
    shadow model's error against the live one's, and input messages counted apart from the
    values they carried; the JSON snapshot agrees."""
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_tool("promtool (Debian's prometheus package) is not installed")
    port = free_port()
    config = agent_config(
        tmp_path,
        device="m",
        port=mosquitto.port,
        prefix=topic_prefix,
        homeassistant={"enabled": False},
        metrics={"interval_s": 1, "prometheus_port": port},
        # the same network, uncalibrated, beside it as its shadow
        streams=[stdin_stream(calibrated_bundle, shadow_model=fast_bundle)],
    )
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/m/metrics")
    rows = np.loadtxt(DEMO_DIR / "room-30d.csv", delimiter=",", skiprows=1)[:ROWS, 1:]
    lines = json_lines(rows, 1_700_000_000, PERIOD)
    lines.insert(5, '{"ts": 1700000001.0, "temperature": "warm"}\n')  # a bad reading
    want = len(rows) - 23
    with start_agent(config) as proc:
        assert proc.stdin is not None
        try:
            assert wait_port(port, 20), "no Prometheus endpoint"
            proc.stdin.write("".join(lines))
            proc.stdin.flush()

            def settled(ms: list[Message]) -> bool:  # every forecast made, skill known
                room = json.loads(ms[-1][1])["streams"]["room"] if ms else {}
                shadow = room.get("shadow") or {}
                return room.get("forecasts") == want and bool(shadow.get("mae_ratio"))

            assert sub.wait_for(settled, 30), sub.messages[-1:]
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr

    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    names = {name for name, _ in samples}
    room = (("stream", "room"),)
    assert samples[("sensorcast_forecasts_total", room)] == want
    # one JSON line per time (the bad one too) carries two values
    assert samples[("sensorcast_input_messages_total", room)] == len(rows) + 1
    assert samples[("sensorcast_readings_accepted_total", room)] == 2 * len(rows)
    assert samples[("sensorcast_inference_seconds_count", room)] == want
    assert samples[("sensorcast_inference_seconds_bucket", (("le", "+Inf"), *room))] == want
    assert 0 < samples[("sensorcast_inference_seconds_sum", room)] < want * 0.05
    assert samples[("sensorcast_connected", ())] == 1
    assert samples[("sensorcast_outbox_depth", ())] >= 0
    assert samples[("sensorcast_outbox_bytes", ())] >= 0
    assert samples[("sensorcast_outbox_late_total", ())] == 0
    assert samples[("sensorcast_gaps_total", room)] == 0
    last = samples[("sensorcast_last_forecast_timestamp_seconds", room)]
    assert abs(last - (1_700_000_000 + (len(rows) - 1) * PERIOD)) < 1e-3
    info = [k for k in samples if k[0] == "sensorcast_model_info"]
    assert info and dict(info[0][1])["model"].startswith("room@")
    rejected = {
        dict(k[1])["reason"]: v
        for k, v in samples.items()
        if k[0] == "sensorcast_readings_rejected_total"
    }
    assert sum(rejected.values()) == 2, rejected  # "warm" is no number, humidity is missing

    # the standard families, and what built this agent
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert 1e6 < samples[("process_resident_memory_bytes", ())] < 2e9
    build = [dict(k[1]) for k in samples if k[0] == "sensorcast_build_info"]
    assert len(build) == 1 and build[0]["version"] == __version__, build
    assert build[0]["python"] == platform.python_version() and build[0]["runtime"], build
    # trust: the interval's level and rolling coverage, skill, anomaly and fallback state
    assert samples[("sensorcast_interval_level_ratio", room)] == 0.8
    coverage = samples[("sensorcast_interval_coverage_ratio", room)]
    assert 0.6 <= coverage <= 0.95, coverage  # nominal 0.8 (about 0.80 measured)
    skill = samples[("sensorcast_forecast_skill", (("baseline", "last_value"), *room))]
    assert 0.0 < skill < 1.0, skill  # the model beats carrying the last value (about 0.46)
    assert samples[("sensorcast_anomaly_active", room)] in (0.0, 1.0)
    assert samples[("sensorcast_anomalies_total", room)] >= 0
    assert samples[("sensorcast_fallback_active", room)] == 0
    assert samples[("sensorcast_forecasts_fallback_total", room)] == 0
    assert 0.5 < samples[("sensorcast_shadow_error_ratio", room)] < 2.0

    report = json.loads(sub.messages[-1][1])
    assert report["device"] == "m" and report["connected"] is True
    assert report["build"]["version"] == __version__
    assert report["outbox"]["degraded"] is None and report["outbox"]["late"] == 0
    st = report["streams"]["room"]
    assert st["gaps"] == 0 and st["level"] == 0.8 and st["fallback"] is False
    assert st["input_messages"] == len(rows) + 1 and st["accepted"] == 2 * len(rows)
    assert 0.0 <= st["coverage"] <= 1.0 and st["skill"]["last_value"] is not None
    assert isinstance(st["anomaly"], bool) and st["shadow"]["model"].startswith("room@")


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
