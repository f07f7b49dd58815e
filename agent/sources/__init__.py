"""Sensor sources: they parse input and hand :class:`Reading` batches to the loop."""

from agent.sources.base import Reading, ReadingSink, Source
from agent.sources.mqtt import MqttJsonSource

__all__ = ["MqttJsonSource", "Reading", "ReadingSink", "Source"]
