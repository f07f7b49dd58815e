"""The README's demo command, with each kind of broker."""

from __future__ import annotations

import pytest

from agent.demo import MosquittoBroker
from tests.conftest import missing_tool, run_cli


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_shows_forecasts_read_back_from_mqtt(broker: str) -> None:
    if broker == "mosquitto" and MosquittoBroker.find() is None:
        missing_tool("mosquitto is not installed: apt-get install mosquitto")
    result = run_cli("demo", "--broker", broker, "--forecasts", "3", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert ("system Mosquitto" if broker == "mosquitto" else "embedded amqtt") in out
    assert "agent:  online" in out and "agent:  offline" in out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("#")]
    assert len(lines) == 3 and all("temperature next" in ln for ln in lines)
