"""The honest fallback through a real broker: readings the model cannot forecast (a room
whose temperature suddenly stops following anything it learnt) make it lose to carrying
the last value forward; the agent then publishes the last value, marked, and goes back to
the model's forecasts once the real room data shows it beats the baseline again."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Callable

import numpy as np

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.mqtt import Subscriber

PERIOD = 0.2
START = 1_700_000_000


def test_a_losing_model_falls_back_to_the_last_value_and_comes_back(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    calibrated_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    # A week into the month (a stretch where the model beats the last value on every
    # 40 forecasts), then the sensor barely moves for 120 periods (+-0.01 °C), then the room.
    room = np.loadtxt(demo_dir / "room-30d.csv", delimiter=",", skiprows=1)[2000:2400, 1:]
    flat = np.tile(room[39], (120, 1))
    flat[:, 0] += 0.01 * (-1.0) ** np.arange(120)
    rows = np.concatenate([room[:40], flat, room[40:]])
    n = len(rows)
    config = agent_config(
        tmp_path,
        device="t",
        port=mosquitto.port,
        prefix=topic_prefix,
        homeassistant={"enabled": False},
        quality={"samples": 40, "min_samples": 10},
        streams=[stdin_stream(calibrated_bundle, fallback="last_value", fallback_after_s=2.0)],
    )
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/t/room/#")
    with start_agent(config) as proc:
        assert proc.stdin is not None
        proc.stdin.write("".join(json_lines(rows, START, PERIOD)))
        proc.stdin.flush()
        try:
            done = sub.wait_for(lambda _: len(sub.payloads("/forecast")) >= n - 24, 60)
            assert done, f"{len(sub.payloads('/forecast'))} forecasts"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    forecasts = [json.loads(p) for p in sub.payloads("/forecast")]
    marks = [f["fallback"] for f in forecasts]
    assert set(marks) == {None, "last_value"}, marks
    first = marks.index("last_value")
    back = marks.index(None, first)
    assert "last_value" not in marks[-200:], marks  # the model's again, for good
    # It began in the flat stretch, after at least fallback_after_s (10 periods) of losing.
    ends = [round((f["window_end"] - START) / PERIOD) for f in forecasts]
    assert 40 + 10 <= ends[first] < 40 + 120, ends[first]
    assert ends[back] >= 40 + 120  # back once the room moved again and the model beat it
    for f, end in zip(forecasts[first:back], ends[first:back]):
        values, lower, upper = (np.array(f[k]) for k in ("values", "lower", "upper"))
        last = np.float32(rows[end, 0])  # the last reading, as the window holds it
        assert (values.astype(np.float32) == last).all(), (end, f["values"])
        assert (lower <= values).all() and (values <= upper).all()
        assert f["model"].startswith("room@")  # the model still named: it is still scored
    stderr_lines = stderr.splitlines()
    on = [line for line in stderr_lines if "publishing the last_value forecast" in line]
    off = [line for line in stderr_lines if "publishing its forecasts" in line]
    assert on and "stream room" in on[0] and "skill -" in on[0], stderr
    assert off and "stream room" in off[0] and "room@" in off[0], stderr
    for anomaly in (json.loads(p) for p in sub.payloads("/anomaly")):
        assert anomaly["stream"] == "room" and anomaly["model"].startswith("room@")
