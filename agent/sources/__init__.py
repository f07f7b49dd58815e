"""Sensor sources: they parse input and hand :class:`Reading` batches to the loop."""

from agent.sources.base import Reading, ReadingSink, Source
from agent.sources.command import CommandSource
from agent.sources.file import FileSource
from agent.sources.mqtt import MqttJsonSource, MqttValueSource
from agent.sources.poll import PolledSource
from agent.sources.registry import SOURCE_TYPES
from agent.sources.stdin import StdinSource

__all__ = [
    "SOURCE_TYPES",
    "CommandSource",
    "FileSource",
    "MqttJsonSource",
    "MqttValueSource",
    "PolledSource",
    "Reading",
    "ReadingSink",
    "Source",
    "StdinSource",
]
