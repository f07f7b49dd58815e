"""What every source shares."""

from __future__ import annotations

from typing import Callable, NamedTuple

__all__ = ["Reading", "ReadingSink", "Source"]


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


class Source:
    """Base class: parse input, hand readings to the sink, count what was rejected.

    ``rejected`` maps a reason (``not_json``, ``missing_feature``, ...) to a
    count; only the source's own thread writes it.
    """

    type_name = "base"

    def __init__(self, stream: int, stream_name: str, features: tuple[str, ...]) -> None:
        self.stream = stream
        self.stream_name = stream_name
        self.features = features
        self.rejected: dict[str, int] = {}
        self.messages = 0

    def reject(self, reason: str) -> None:
        """Count one rejected input under ``reason``."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def close(self) -> None:
        """Release what the source holds."""
