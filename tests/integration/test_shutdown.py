"""Shutdown while inputs stay open: ``sensor | sensorcast run`` under systemd or Docker gets
SIGTERM while the sensor still holds the pipe, and must exit 0, not abort the interpreter."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.demo import MosquittoBroker
from tests.conftest import REPO

MODEL = REPO / "tests" / "data" / "room_float32.tflite"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fed", [False, True], ids=["idle", "fed"])
def test_sigterm_with_stdin_still_open_exits_0(
    fed: bool, mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """The writer keeps the pipe open (no EOF) through the whole shutdown."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nid = "pipe"\n[mqtt]\nurl = "mqtt://127.0.0.1:{mosquitto.port}"\n'
        f'topic_prefix = "{topic_prefix}"\n'
        f'[[streams]]\nname = "room"\nmodel = "{MODEL}"\n[[streams.sources]]\ntype = "stdin"\n'
    )
    with subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        try:
            for line in proc.stderr:
                if b" online as " in line:
                    break
            if fed:
                proc.stdin.write(b'{"temperature": 21.5, "humidity": 40}\n{"temperature": 2')
                proc.stdin.flush()
            time.sleep(0.5)  # the reading thread is waiting for more input
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)  # stdin still open: no EOF helps the agent out
            stderr = proc.stderr.read().decode(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdin.close()
    assert "Fatal Python error" not in stderr, stderr
    assert code == 0, stderr
    assert "shutting down" in stderr
