"""The README's demo command, with each kind of broker, and installed from a wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agents import run_cli
from tests.support.brokers import find_mosquitto
from tests.support.host import missing_tool
from tests.support.paths import DEMO_DIR, REPO


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_shows_forecasts_read_back_from_mqtt(broker: str) -> None:
    if broker == "mosquitto" and find_mosquitto() is None:
        missing_tool("mosquitto is not installed: apt-get install mosquitto")
    result = run_cli("demo", "--broker", broker, "--forecasts", "3", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert ("system Mosquitto" if broker == "mosquitto" else "embedded amqtt") in out
    assert "agent:  online" in out and "agent:  offline" in out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("#")]
    assert len(lines) == 3 and all("temperature next" in ln for ln in lines)


@pytest.mark.timeout(600)
def test_the_demo_runs_from_a_wheel(tmp_path: Path) -> None:
    """A wheel carries the demo's bundle (in the checkout a symlink into examples/demo): the
    demo installed from it runs with no checkout on the path."""
    if find_mosquitto() is None:
        missing_tool("mosquitto is not installed: apt-get install mosquitto")
    src = tmp_path / "src"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
        check=True, timeout=60,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        if os.path.lexists(REPO / name):  # a file moved away is still listed until committed
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name, follow_symlinks=False)
    assert (src / "agent" / "demo" / "room.tflite").is_symlink()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
         str(src)],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("sensorcast-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    bundle = site / "sensorcast" / "agent" / "demo" / "room.tflite"
    assert not bundle.is_symlink()
    assert bundle.read_bytes() == (DEMO_DIR / "room.tflite").read_bytes()
    # The wheel's package first on the path (its dependencies come from this environment),
    # for the demo and the agent it starts; run from elsewhere than the checkout.
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", "import sensorcast.agent.demo as d; print(d.BUNDLE)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert probe.stdout.strip() == str(bundle)
    result = run_cli("demo", "--forecasts", "2", env=env, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "agent:  offline (exit code 0)" in result.stdout, result.stdout
