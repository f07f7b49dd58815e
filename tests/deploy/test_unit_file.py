"""deploy/sensorcast.service: systemd's own tools judge it (offline: systemd need not be PID 1)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.support.host import missing_tool
from tests.support.paths import REPO

UNIT = REPO / "deploy" / "sensorcast.service"


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        missing_tool("systemd-analyze is not installed: apt-get install systemd")
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, check=False, timeout=60
    )


def test_hardening_exposure_is_at_most_2() -> None:
    done = _analyze("security", "--offline=yes", "--no-pager", str(UNIT))
    found = re.search(r"Overall exposure level for sensorcast.service: ([\d.]+)", done.stdout)
    assert found, done.stdout[-2000:] + done.stderr
    assert float(found.group(1)) <= 2.0, done.stdout


def test_the_unit_parses_and_has_what_the_agent_relies_on() -> None:
    done = _analyze("verify", str(UNIT))
    # The only complaint allowed offline: the venv is not installed on this machine.
    problems = [
        line
        for line in done.stderr.splitlines()
        if line.strip() and "/opt/sensorcast/bin/sensorcast is not executable" not in line
    ]
    assert problems == [], done.stderr
    text = UNIT.read_text()
    for setting in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=sensorcast",
        "LoadCredential=mqtt-password:/etc/sensorcast/mqtt-password",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "--config /etc/sensorcast/sensorcast.toml",
    ):
        assert setting in text, setting
    # Every hardening setting is explained by a comment above it.
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# --- Hardening"))
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("["):
            break
        if lines[i] and not lines[i].startswith("#"):
            j = i
            while j > start and lines[j - 1] and not lines[j - 1].startswith("#"):
                j -= 1
            assert lines[j - 1].startswith("#"), f"no comment explains {lines[i]}"


def test_the_example_config_is_accepted(tmp_path: Path) -> None:
    """What install.sh writes to /etc/sensorcast passes `sensorcast check`."""
    from tests.support.agents import run_cli

    (tmp_path / "models").mkdir()
    shutil.copy(REPO / "examples/demo/room.tflite", tmp_path / "models/room.tflite")
    shutil.copy(REPO / "deploy/sensorcast.toml", tmp_path / "sensorcast.toml")
    done = run_cli("check", "--config", str(tmp_path / "sensorcast.toml"))
    assert done.returncode == 0, done.stderr
    assert "stream room: room@" in done.stdout
