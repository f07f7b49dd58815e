"""The real Home Assistant of tests/homeassistant: one per module, started, onboarded and
connected to the session's Mosquitto before the first test, stopped after the last."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.homeassistant.hass import HomeAssistant
from tests.support.brokers import MosquittoBroker


@pytest.fixture(scope="module")
def home_assistant(
    mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeAssistant]:
    """Home Assistant Core 2024.3.3 with an owner, a token and the MQTT integration."""
    ha = HomeAssistant(tmp_path_factory.mktemp("hass") / "config")
    ha.start()
    try:
        ha.onboard()
        ha.add_mqtt(mosquitto.port)
        yield ha
    finally:
        ha.stop()
