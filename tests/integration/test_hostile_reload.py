"""Hot reload of a hostile model file: a manifest with period_s = 1e-300 (it passed every
check, was swapped in, and the next reading crashed the agent with OverflowError) and a valid
bundle over `[models] max_bytes` are both refused; the running model keeps forecasting."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.manifests import bundle_bytes, demo_manifest
from tests.support.mqtt import Subscriber

PERIOD = 0.2


def test_hostile_model_files_are_refused_on_hot_reload(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    manifest = demo_manifest()
    manifest["period_s"] = PERIOD  # the demo model relabelled, so windows fill in seconds
    good = bundle_bytes(manifest)
    model = tmp_path / "room.tflite"
    model.write_bytes(good)
    label = f"room@{hashlib.sha256(good).hexdigest()[:12]}"
    config = agent_config(
        tmp_path,
        device="hostile",
        port=mosquitto.port,
        prefix=topic_prefix,
        models={"max_bytes": 1048576},
        streams=[stdin_stream(model)],
    )
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:70, 1:]
    lines = json_lines(rows, 1_700_000_000, PERIOD)
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/hostile/room/forecast")

    def swap_in(data: bytes) -> None:
        incoming = tmp_path / "incoming.tflite"
        incoming.write_bytes(data)
        os.replace(incoming, model)

    with start_agent(config) as proc:
        assert proc.stdin is not None

        def feed(part: list[str]) -> None:
            assert proc.stdin is not None
            proc.stdin.write("".join(part))
            proc.stdin.flush()

        feed(lines[:30])
        assert sub.wait_for(lambda ms: len(ms) >= 6, 20)
        manifest["period_s"] = 1e-300
        swap_in(bundle_bytes(manifest))
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(1.0)
        feed(lines[30:45])
        assert sub.wait_for(lambda ms: len(ms) >= 21, 20)
        # A valid bundle, padded past max_bytes (the flatbuffer ignores the tail).
        swap_in(good + bytes(1536 * 1024))
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(1.0)
        feed(lines[45:])
        assert sub.wait_for(lambda ms: len(ms) >= 46, 20)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "OverflowError" not in stderr
    refused = "manifest field period_s = 1e-300 is out of range (0.001 .. 31622400 s)"
    assert f"{refused}; keeping {label}" in stderr
    assert "more than the 1048576-byte (1 MiB) limit for a model bundle" in stderr
    assert {json.loads(p)["model"] for p in sub.payloads("/forecast")} == {label}
