"""Warm restart: windows saved at shutdown let a restarted agent forecast as soon as the new
readings line up, instead of waiting a whole window; a snapshot from another model is ignored."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import read_bundle

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.mqtt import Subscriber

PERIOD = 0.2


def _run(config: Path, lines: list[str]) -> str:
    with start_agent(config) as proc:
        assert proc.stdin is not None
        proc.stdin.write("".join(lines))
        proc.stdin.flush()
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    return stderr


def test_restart_resumes_from_the_saved_window(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    config = agent_config(
        tmp_path,
        device="warm",
        port=mosquitto.port,
        prefix=topic_prefix,
        state={"dir": tmp_path / "state"},
        streams=[stdin_stream(fast_bundle, max_gap_s=60)],
    )
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:26, 1:]
    start = 1_700_000_000.0
    lines = json_lines(rows, start, PERIOD)
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/warm/room/forecast")
    first = _run(config, lines[:20])  # 20 of 24 rows: no forecast yet
    assert "0 forecasts" in first
    second = _run(config, lines[20:])  # 6 more: enough only with the saved 20
    assert "warm restart with 20 of 24 rows" in second
    assert sub.wait_for(lambda ms: len(ms) >= 3, 10)
    forecasts = [json.loads(p) for p in sub.payloads("/forecast")]
    f = Forecaster(read_bundle(fast_bundle))
    for k, message in enumerate(forecasts):
        window = rows[k : k + 24].astype(np.float32)
        np.testing.assert_allclose(
            [v[0] for v in message["values"]], f.predict(window)[:, 0], atol=1e-4
        )

    # A snapshot from another model is ignored, with a log line.
    snapshot = tmp_path / "state" / "windows-warm.json"
    data = json.loads(snapshot.read_text())
    data["streams"]["room"]["model"] = "0" * 64
    snapshot.write_text(json.dumps(data))
    assert "window snapshot ignored: it is from another model" in _run(config, [])
