"""Warm restart: windows saved at shutdown let a restarted agent forecast as soon as the new
readings line up, instead of waiting a whole window; a snapshot from another model is ignored."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from agent.demo import MosquittoBroker
from agent.forecast import Forecaster
from agent.manifest import read_bundle
from tests.conftest import Subscriber, json_lines

PERIOD = 0.2


def _run(config: Path, lines: list[str]) -> str:
    with subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
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
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nid = "warm"\n[state]\ndir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{mosquitto.port}"\ntopic_prefix = "{topic_prefix}"\n'
        f'[[streams]]\nname = "room"\nmodel = "{fast_bundle}"\nmax_gap_s = 60\n'
        '[[streams.sources]]\ntype = "stdin"\n'
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
