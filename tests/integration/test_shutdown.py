"""Shutdown while inputs stay open: ``sensor | sensorcast run`` under systemd or Docker gets
SIGTERM while the sensor still holds the pipe, and must exit 0, not abort the interpreter."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.configs import agent_config, stdin_stream
from tests.support.paths import DATA_DIR

MODEL = DATA_DIR / "room_float32.tflite"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fed", [False, True], ids=["idle", "fed"])
def test_sigterm_with_stdin_still_open_exits_0(
    fed: bool, mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """The writer keeps the pipe open (no EOF) through the whole shutdown."""
    config = agent_config(
        tmp_path,
        device="pipe",
        port=mosquitto.port,
        prefix=topic_prefix,
        streams=[stdin_stream(MODEL)],
    )
    with start_agent(config) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        try:
            for line in proc.stderr:
                if " online as " in line:
                    break
            if fed:
                proc.stdin.write('{"temperature": 21.5, "humidity": 40}\n{"temperature": 2')
                proc.stdin.flush()
            time.sleep(0.5)  # the reading thread is waiting for more input
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)  # stdin still open: no EOF helps the agent out
            stderr = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdin.close()
    assert "Fatal Python error" not in stderr, stderr
    assert code == 0, stderr
    assert "shutting down" in stderr
