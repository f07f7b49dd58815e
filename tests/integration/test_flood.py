"""Hostile load: 1 MB payloads and a flood of messages on the input topic. Memory stays
bounded, the agent sheds or rejects what it cannot take and counts it, forecasts keep coming."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.configs import agent_config, topic_stream
from tests.support.mqtt import Subscriber

PERIOD = 0.2


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(120)
def test_big_payloads_and_a_flood_are_shed_and_counted(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    topic = f"{topic_prefix}/in"
    config = agent_config(
        tmp_path,
        device="flood",
        port=mosquitto.port,
        prefix=topic_prefix,
        streams=[topic_stream(fast_bundle, topic)],
    )
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/flood/room/forecast")
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    with start_agent(config, stdin=subprocess.DEVNULL) as proc:
        time.sleep(2.0)
        base = _rss_mb(proc.pid)
        big = b'{"ts": 1, "temperature": ' + b"1" * (1024 * 1024) + b"}"
        for _ in range(50):
            pub.publish(topic, big, qos=0)
        junk = json.dumps({"sensor": "not ours", "value": 20.0}).encode()  # no feature in it
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 4.0:
            pub.publish(topic, junk, qos=0)
            sent += 1
        peak = _rss_mb(proc.pid)
        # after the flood, a real stream still gets its forecasts
        rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:27, 1:]
        now = time.time()
        start = (np.floor(now / PERIOD) - 40) * PERIOD
        for i, (t, h) in enumerate(rows):
            payload = json.dumps({"ts": start + i * PERIOD, "temperature": t, "humidity": h})
            pub.publish(topic, payload, qos=1).wait_for_publish(10)
        try:
            assert sub.wait_for(lambda ms: len(ms) >= 3, 30), "no forecasts after the flood"
            peak = max(peak, _rss_mb(proc.pid))
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    pub.loop_stop()
    pub.disconnect()
    assert proc.returncode == 0, stderr[-2000:]
    assert sent > 10_000
    assert peak - base < 150, f"RSS grew from {base:.0f} MB to {peak:.0f} MB"
    summary = [ln for ln in stderr.splitlines() if "readings accepted" in ln][-1]
    assert "too_large" in summary  # the 1 MB payloads, rejected unparsed
    assert "missing_feature" in summary  # the flood, counted
