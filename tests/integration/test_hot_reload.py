"""Model hot reload: a changed model file (or SIGHUP) swaps the bundle between two forecasts;
a bad new model leaves the old one running and says why."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from sensorcast.agent.forecast.manifest import read_bundle

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import convert_demo, json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.mqtt import Subscriber

PERIOD = 0.2


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("reload")
    a, b = d / "a.tflite", d / "b.tflite"
    assert convert_demo(a, "--period", str(PERIOD), calibrate=False) == 0
    assert convert_demo(b, "--period", str(PERIOD), "--quantize", "float16", calibrate=False) == 0
    return a, b


def test_model_file_change_and_sighup(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    bundles: tuple[Path, Path],
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    model = tmp_path / "room.tflite"
    shutil.copy(bundles[0], model)
    config = agent_config(
        tmp_path,
        device="hot",
        port=mosquitto.port,
        prefix=topic_prefix,
        streams=[stdin_stream(model)],
    )
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:60, 1:]
    lines = json_lines(rows, 1_700_000_000, PERIOD)
    label_a, label_b = (f"room@{read_bundle(p).sha256[:12]}" for p in bundles)
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/hot/room/forecast")

    def models() -> list[str]:
        return [json.loads(p)["model"] for p in sub.payloads("/forecast")]

    with start_agent(config) as proc:
        assert proc.stdin is not None

        def feed(part: list[str]) -> None:
            assert proc.stdin is not None
            proc.stdin.write("".join(part))
            proc.stdin.flush()

        feed(lines[:30])
        assert sub.wait_for(lambda ms: len(ms) >= 6, 20)
        # A broken file replaces the model: the old one keeps forecasting.
        model.write_bytes(b"not a model at all")
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(1.0)
        feed(lines[30:40])
        assert sub.wait_for(lambda ms: len(ms) >= 16, 20)
        assert set(models()) == {label_a}
        # A good new bundle is swapped in when the file changes (no signal needed).
        tmp = tmp_path / "incoming.tflite"
        shutil.copy(bundles[1], tmp)
        os.replace(tmp, model)
        time.sleep(3.0)  # the agent checks model files every 2 s
        feed(lines[40:])
        assert sub.wait_for(lambda ms: len(ms) >= 36, 20)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert f"keeping {label_a}" in stderr and "not a TFLite model" in stderr
    assert f"model reloaded: now {label_b}" in stderr
    seen = models()
    assert seen[0] == label_a and seen[-1] == label_b
    assert seen == sorted(seen, key=lambda m: m == label_b)  # one switch, never back
    seqs = [json.loads(p)["seq"] for p in sub.payloads("/forecast")]
    assert seqs == list(range(len(seqs)))  # forecasts go on without a gap across the swap
