"""Source type names, as written in the config, mapped to their classes.

Both ends go through this table: the config package validates each
``[streams.inputs.<feature>]`` and ``[[streams.sources]]`` table with the class its
``type`` names (:meth:`Source.parse_config`), and :func:`build_sources` builds each
source with it (:meth:`Source.from_config`). A new source type is one module and one
entry here.

The dependency runs one way, ``config`` -> ``sources``: this package never imports the
config package, so :func:`build_sources` takes a stream's and the broker's config by the
attributes it reads (:class:`StreamInputs`, :class:`BrokerSecrets`), which
:class:`~sensorcast.agent.config.StreamConfig` and
:class:`~sensorcast.agent.config.MqttConfig` have.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from importlib import import_module
from typing import Optional, Protocol

from sensorcast.agent.sources.base import ReadingSink, Source, SourceContext, Subscribe
from sensorcast.agent.sources.mqtt import MqttJsonSource
from sensorcast.agent.sources.spec import SecretValue, SourceConfig

__all__ = ["SOURCE_TYPES", "BrokerSecrets", "StreamInputs", "build_sources", "source_types"]

#: Each type name, in the order config messages list them, with the module (of this
#: package) and the class that implement it.
_WHERE = {
    "file": ("file", "FileSource"),
    "mqtt_value": ("mqtt", "MqttValueSource"),
    "mqtt": ("mqtt", "MqttJsonSource"),
    "command": ("command", "CommandSource"),
    "stdin": ("stdin", "StdinSource"),
}


class _SourceTypes(Mapping[str, "type[Source]"]):
    """The type table, each class imported when it is first looked up: a plain ``run``
    (readings on an input topic) never loads the polling threads, ``subprocess`` or
    ``glob`` of the types it does not use (the agent's resident memory)."""

    def __getitem__(self, name: str) -> type[Source]:
        module, attr = _WHERE[name]
        cls: type[Source] = getattr(import_module(f"{__package__}.{module}"), attr)
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)

    def __contains__(self, name: object) -> bool:
        return name in _WHERE


#: ``type = "..."`` in ``[streams.inputs.<feature>]`` or ``[[streams.sources]]``; in the
#: order config messages list them.
SOURCE_TYPES: Mapping[str, type[Source]] = _SourceTypes()


def source_types(per_feature: bool) -> dict[str, type[Source]]:
    """The types usable for one feature (``[streams.inputs.<feature>]``), or else for a
    whole stream (``[[streams.sources]]``)."""
    return {
        name: cls
        for name, cls in SOURCE_TYPES.items()
        if (cls.for_feature if per_feature else cls.for_stream)
    }


class StreamInputs(Protocol):
    """What :func:`build_sources` reads of a stream's config (a ``StreamConfig``)."""

    @property
    def name(self) -> str:
        """The stream's name, for messages."""

    @property
    def input_topic(self) -> Optional[str]:
        """The stream's JSON input topic, if any."""

    @property
    def sources(self) -> Sequence[SourceConfig]:
        """Its other sources, validated."""


class BrokerSecrets(Protocol):
    """What :func:`build_sources` reads of the broker's config (an ``MqttConfig``)."""

    @property
    def password(self) -> Optional[SecretValue]:
        """The broker password, however it was given."""

    @property
    def password_env(self) -> Optional[str]:
        """``mqtt.password_env``: the name of the variable that holds it."""


def build_sources(
    index: int,
    sc: StreamInputs,
    features: tuple[str, ...],
    mqtt: BrokerSecrets,
    subscribe: Subscribe,
    sink: ReadingSink,
) -> list[Source]:
    """Build stream ``index``'s sources (its ``input_topic`` first, then each configured
    source by its type) for a model with ``features``; MQTT ones call ``subscribe``,
    every one hands its readings to ``sink``. Command sources get the broker password to
    keep it out of the child's environment. Nothing is started."""
    ctx = SourceContext(
        stream=index,
        stream_name=sc.name,
        features=features,
        sink=sink,
        subscribe=subscribe,
        secrets=() if mqtt.password is None else (mqtt.password,),
        secret_env=() if mqtt.password_env is None else (mqtt.password_env,),
    )
    out: list[Source] = []
    if sc.input_topic is not None:
        topic = SourceConfig(
            type=MqttJsonSource.type_name,
            where=f"streams[{index}].input_topic",
            feature=None,
            topic=sc.input_topic,
        )
        out.append(MqttJsonSource.from_config(topic, ctx))
    out.extend(SOURCE_TYPES[cfg.type].from_config(cfg, ctx) for cfg in sc.sources)
    return out
