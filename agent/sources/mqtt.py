"""JSON readings over MQTT: ``{"ts": <unix s>, "<feature>": <number>, ...}``."""

from __future__ import annotations

import json
import logging
import math

from agent.logutil import RateLimitedLog
from agent.sources.base import Reading, ReadingSink, Source

__all__ = ["MqttJsonSource"]

logger = logging.getLogger(__name__)


class MqttJsonSource(Source):
    """Parses JSON objects from a stream's input topic.

    ``ts`` is optional (the arrival time is used when absent). Each of the
    stream's features present with a number becomes a reading; a missing or
    non-numeric feature is counted and the others are kept. Keys that are not
    features are ignored.
    """

    type_name = "mqtt"

    def __init__(
        self,
        stream: int,
        stream_name: str,
        features: tuple[str, ...],
        topic: str,
        sink: ReadingSink,
    ) -> None:
        super().__init__(stream, stream_name, features)
        self.topic = topic
        self._sink = sink
        self._log = RateLimitedLog(logger)
        self._indexed = tuple(enumerate(features))

    def handle(self, payload: bytes, arrival: float) -> None:
        """Parse one message (called from the MQTT network thread)."""
        self.messages += 1
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            self._bad("not_json", "payload is not JSON")
            return
        if not isinstance(obj, dict):
            self._bad("not_object", "payload is not a JSON object")
            return
        ts = obj.get("ts", arrival)
        if not _is_number(ts) or not math.isfinite(ts):
            self._bad("bad_timestamp", "ts is not a finite number of Unix seconds")
            return
        readings = []
        for index, name in self._indexed:
            value = obj.get(name)
            if value is None:
                self._bad("missing_feature", f"feature {name!r} is missing")
            elif not _is_number(value):
                self._bad("bad_value", f"feature {name!r} is not a number")
            else:
                readings.append(Reading(self.stream, index, float(ts), float(value)))
        if readings:
            self._sink(readings)

    def _bad(self, reason: str, what: str) -> None:
        self.reject(reason)
        self._log.warning(
            f"{self.stream_name}:{reason}",
            "stream %s: rejected a reading on %s: %s",
            self.stream_name,
            self.topic,
            what,
        )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
