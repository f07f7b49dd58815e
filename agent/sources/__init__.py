"""Sensor sources: they parse input and hand :class:`Reading` batches to the loop.

One module per source type, each a :class:`Source` subclass listed in
:data:`~sensorcast.agent.sources.registry.SOURCE_TYPES`. The package itself stays light:
the config package imports :mod:`~sensorcast.agent.sources.spec` when it loads, so the
source classes (threads, subprocesses, the JSON parser) load on first use of their names.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sensorcast.agent.sources.base import Reading, ReadingSink, Source, SourceContext
from sensorcast.agent.sources.spec import SourceConfig

if TYPE_CHECKING:
    from sensorcast.agent.sources.command import CommandSource
    from sensorcast.agent.sources.file import FileSource
    from sensorcast.agent.sources.mqtt import MqttJsonSource, MqttValueSource
    from sensorcast.agent.sources.poll import PolledSource
    from sensorcast.agent.sources.registry import SOURCE_TYPES, build_sources
    from sensorcast.agent.sources.stdin import StdinSource

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
    "SourceConfig",
    "SourceContext",
    "StdinSource",
    "build_sources",
]

#: Names loaded on first use, by the module (of this package) that defines them.
_LAZY = {
    "SOURCE_TYPES": "registry",
    "build_sources": "registry",
    "CommandSource": "command",
    "FileSource": "file",
    "MqttJsonSource": "mqtt",
    "MqttValueSource": "mqtt",
    "PolledSource": "poll",
    "StdinSource": "stdin",
}


def __getattr__(name: str) -> Any:
    """Import a source class (or the registry) when it is first asked for (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value
