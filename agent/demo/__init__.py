"""``sensorcast demo``: the shipped model, a real broker, a sensor stream, forecasts read back.

Uses the system's Mosquitto when installed, otherwise an embedded pure-Python broker (amqtt,
the ``[demo]`` extra), so it needs no root and no setup. Its bundle ships inside the package
(``room.tflite``, package data), so it runs from a wheel install as from the checkout.

- :mod:`.room`: the bundle's path and the synthetic room's readings;
- :mod:`.brokers`: the demo's own minimal broker starters;
- :mod:`.run`: the story, told on stdout.
"""

from __future__ import annotations

from sensorcast.agent.demo.room import BUNDLE, DEMO_PERIOD_S, room_series
from sensorcast.agent.demo.run import run_demo

__all__ = ["BUNDLE", "DEMO_PERIOD_S", "room_series", "run_demo"]
