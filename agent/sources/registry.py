"""Source type names, as written in the config, mapped to their classes."""

from __future__ import annotations

from agent.sources.base import Source
from agent.sources.command import CommandSource
from agent.sources.file import FileSource
from agent.sources.mqtt import MqttJsonSource, MqttValueSource
from agent.sources.stdin import StdinSource

__all__ = ["SOURCE_TYPES"]

#: ``type = "..."`` in ``[streams.inputs.<feature>]`` or ``[[streams.sources]]``.
SOURCE_TYPES: dict[str, type[Source]] = {
    cls.type_name: cls
    for cls in (MqttJsonSource, MqttValueSource, FileSource, CommandSource, StdinSource)
}
