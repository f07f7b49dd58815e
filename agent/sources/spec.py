"""What a source's config is made of: the generic validated table, and the reader a source
type validates its own table with.

Light on purpose (no threads, subprocesses or JSON here): the config package imports this
module when it loads, and the source classes only when a config names a source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

__all__ = ["NO_DEFAULT", "SecretValue", "SourceConfig", "SourceTable"]


@dataclass(frozen=True)
class SourceConfig:
    """One ``[streams.inputs.<feature>]`` or ``[[streams.sources]]`` table, validated by
    its source type (:meth:`~sensorcast.agent.sources.base.Source.parse_config`).

    A field's default here is the key's default in the config file (defined once).
    """

    type: str  #: A name in :data:`~sensorcast.agent.sources.registry.SOURCE_TYPES`.
    where: str  #: Its key path, for messages (``streams[0].inputs.temperature``).
    feature: Optional[str]  #: The feature it feeds, or None for whole-stream sources.
    topic: Optional[str] = None  #: mqtt / mqtt_value: the topic it subscribes to.
    path: Optional[Path] = None  #: file: path or glob (re-resolved at each read).
    parser: str = "number"  #: file: ``number`` or ``w1_slave``.
    scale: float = 1.0  #: file: value = raw * scale + offset (raw in the file's unit).
    offset: float = 0.0  #: file: added after ``scale``, in the feature's unit.
    command: tuple[str, ...] = ()  #: command: argv, no shell.
    #: command: ``number`` (one feature) or ``json``; the default is ``number`` for a
    #: feature's input and ``json`` for a whole-stream source.
    format: str = "json"
    interval_s: float = 10.0  #: file/command: time between reads, seconds.
    timeout_s: float = 5.0  #: command: kill after this long, seconds.
    max_backoff_s: float = 60.0  #: file/command: longest retry delay while failing, seconds.


#: ``SourceTable.get``'s marker for "the key's default is the SourceConfig field's".
NO_DEFAULT: Any = object()


class SourceTable(Protocol):
    """One source's table as its type validates it (the config reader implements this).

    Every problem is recorded with its key path and validation goes on, so that one run
    reports all of them; the table is dropped if any was recorded.
    """

    @property
    def where(self) -> str:
        """The table's key path, e.g. ``streams[0].inputs.temperature``."""

    @property
    def feature(self) -> Optional[str]:
        """The feature it feeds (``[streams.inputs.<feature>]``), None for a whole stream."""

    def get(
        self, key: str, kind: type, *, required: bool = False, default: Any = NO_DEFAULT
    ) -> Any:
        """``key``'s value if it is a ``kind`` (ints pass as floats); else the default (the
        :class:`SourceConfig` field's unless ``default`` is given) and a recorded problem."""

    def topic(self, key: str, *, required: bool = False) -> Optional[str]:
        """A topic name without wildcards, or None (absent or wrong)."""

    def resolve(self, text: str) -> Path:
        """A path from the config, ``~`` expanded, relative to the config file's folder."""

    def error(self, key: str, message: str) -> None:
        """Record a problem of ``key`` (``<where>.<key>: <message>``)."""


class SecretValue(Protocol):
    """A secret (:class:`sensorcast.agent.config.Secret`): only ``reveal`` shows it."""

    def reveal(self) -> str:
        """The secret itself."""
