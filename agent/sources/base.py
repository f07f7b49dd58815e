"""What every source shares: the reading it hands on, and the plugin contract.

A source type is a :class:`Source` subclass listed in
:data:`~sensorcast.agent.sources.registry.SOURCE_TYPES`. It declares its ``type`` name, the
config keys it takes and where it may be used; it validates its own config table
(:meth:`Source.parse_config`) and builds itself from the result (:meth:`Source.from_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, NamedTuple, Optional

from sensorcast.agent.sources.spec import SecretValue, SourceConfig, SourceTable

__all__ = ["Reading", "ReadingSink", "Source", "SourceContext", "Subscribe"]


class Reading(NamedTuple):
    """One value of one feature of one stream at one time.

    ``stream`` and ``feature`` are indices into the agent's streams and the
    stream's model features, resolved once by the source.
    """

    stream: int
    feature: int
    ts: float  #: Unix seconds.
    value: float  #: In the feature's own units.


#: Where a source hands its readings: one call per parsed message.
ReadingSink = Callable[[list[Reading]], None]

#: Subscribe a handler to an MQTT topic: ``handler(payload, arrival Unix s)`` is then called
#: in the main loop for each message.
Subscribe = Callable[[str, Callable[[bytes, float], None]], None]


@dataclass(frozen=True)
class SourceContext:
    """What a source is built with besides its own config: its stream and the agent."""

    stream: int  #: The stream's index among the agent's streams.
    stream_name: str
    features: tuple[str, ...]  #: The stream's model features, in order.
    sink: ReadingSink  #: Where readings go.
    subscribe: Subscribe  #: How MQTT sources get their messages.
    #: The broker password (however it was given): kept out of child processes.
    secrets: tuple[SecretValue, ...] = ()
    #: Environment variables no child process sees (``mqtt.password_env``).
    secret_env: tuple[str, ...] = ()

    def feature_index(self, cfg: SourceConfig) -> Optional[int]:
        """The index of the feature ``cfg`` feeds, or None for a whole-stream source."""
        return None if cfg.feature is None else self.features.index(cfg.feature)


class Source:
    """Base class: parse input, hand readings to the sink, count what was rejected.

    ``rejected`` maps a reason (``not_json``, ``missing_feature``, ...) to a
    count; only the source's own thread writes it.
    """

    #: The ``type = "..."`` that selects it in the config.
    type_name: ClassVar[str] = "base"
    #: Keys its config table takes besides ``type``.
    config_keys: ClassVar[frozenset[str]] = frozenset()
    #: It may feed one feature: ``[streams.inputs.<feature>]``.
    for_feature: ClassVar[bool] = False
    #: It may feed a whole stream: ``[[streams.sources]]``.
    for_stream: ClassVar[bool] = False
    #: Set when only one source of this type can exist in a whole config: what to do instead.
    one_per_config: ClassVar[Optional[str]] = None

    def __init__(self, stream: int, stream_name: str, features: tuple[str, ...]) -> None:
        self.stream = stream
        self.stream_name = stream_name
        self.features = features
        self.rejected: dict[str, int] = {}
        self.messages = 0

    @classmethod
    def parse_config(cls, table: SourceTable) -> SourceConfig:
        """Validate this type's table (unknown keys are already reported): problems go to
        ``table``, which drops the result if there were any. A type without keys of its
        own needs no more than this."""
        return SourceConfig(type=cls.type_name, where=table.where, feature=table.feature)

    @classmethod
    def from_config(cls, cfg: SourceConfig, ctx: SourceContext) -> Source:
        """Build the source ``cfg`` describes, for the stream in ``ctx``."""
        raise NotImplementedError(f"source type {cls.type_name!r} cannot be built from config")

    def reject(self, reason: str) -> None:
        """Count one rejected input under ``reason``."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def close(self) -> None:
        """Release what the source holds."""
