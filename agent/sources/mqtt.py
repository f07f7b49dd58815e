"""Readings over MQTT: JSON objects for a whole stream, or one number per message."""

from __future__ import annotations

import logging

from sensorcast.agent.errors import ConfigError
from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.sources.base import Reading, ReadingSink, Source, SourceContext
from sensorcast.agent.sources.parse import Rejection, parse_json_reading, parse_number
from sensorcast.agent.sources.spec import SourceConfig, SourceTable

__all__ = ["MqttJsonSource", "MqttValueSource"]

#: Readings are small; anything larger is rejected unparsed (a flood of 1 MB payloads must
#: not cost a JSON parse each), bytes.
MAX_PAYLOAD = 64 * 1024

logger = logging.getLogger(__name__)


class _MqttSource(Source):
    """What the MQTT sources share: a topic, a sink and rate-limited reject logs."""

    config_keys = frozenset({"topic"})

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
        logger.debug("stream %s: %s source on topic %s", stream_name, self.type_name, topic)

    @classmethod
    def parse_config(cls, table: SourceTable) -> SourceConfig:
        """``topic`` (required): a topic name without wildcards."""
        topic = table.topic("topic", required=True)
        return SourceConfig(
            type=cls.type_name, where=table.where, feature=table.feature, topic=topic
        )

    def _bad(self, reason: str, what: str) -> None:
        self.reject(reason)
        self._log.warning(
            f"{self.stream_name}:{self.topic}:{reason}",
            "stream %s: rejected a reading on %s: %s",
            self.stream_name,
            self.topic,
            what,
        )

    def _hand_on(self, readings: list[Reading], rejections: list[Rejection]) -> None:
        for r in rejections:
            self._bad(r, r.detail)
        if readings:
            self._sink(readings)


class MqttJsonSource(_MqttSource):
    """Parses JSON objects from a stream's input topic.

    ``{"ts": <unix s>, "<feature>": <number>, ...}``: ``ts`` is optional (the
    arrival time is used when absent). Each of the stream's features present
    with a number becomes a reading; a missing or non-numeric feature is
    counted and the others are kept. Keys that are not features are ignored.
    """

    type_name = "mqtt"
    for_stream = True

    def __init__(
        self,
        stream: int,
        stream_name: str,
        features: tuple[str, ...],
        topic: str,
        sink: ReadingSink,
    ) -> None:
        super().__init__(stream, stream_name, features, topic, sink)
        self._indexed = tuple(enumerate(features))

    @classmethod
    def from_config(cls, cfg: SourceConfig, ctx: SourceContext) -> MqttJsonSource:
        """A source for the stream in ``ctx``, subscribed to ``cfg.topic``."""
        assert cfg.topic is not None  # parse_config made sure
        source = cls(ctx.stream, ctx.stream_name, ctx.features, cfg.topic, ctx.sink)
        ctx.subscribe(cfg.topic, source.handle)
        return source

    def handle(self, payload: bytes, arrival: float) -> None:
        """Parse one message (called in the main loop's MQTT poll); ``arrival`` in Unix s."""
        self.messages += 1
        if len(payload) > MAX_PAYLOAD:
            self._bad("too_large", f"payload of {len(payload)} bytes (limit {MAX_PAYLOAD})")
            return
        readings, rejections = parse_json_reading(payload, arrival, self._indexed, self.stream)
        if rejections:
            for r in rejections:
                self._bad(r, r.detail)
        if readings:
            self._sink(readings)


class MqttValueSource(_MqttSource):
    """One feature of a stream from its own topic, one number per message.

    ``sensors/room/temperature`` -> ``21.4``, timestamped with the arrival
    time. A JSON object ``{"ts": <unix s>, "value": <number>}`` is accepted as
    well (``ts`` optional, as for :class:`MqttJsonSource`).
    """

    type_name = "mqtt_value"
    for_feature = True

    def __init__(
        self,
        stream: int,
        stream_name: str,
        features: tuple[str, ...],
        feature_index: int,
        topic: str,
        sink: ReadingSink,
    ) -> None:
        super().__init__(stream, stream_name, features, topic, sink)
        if not 0 <= feature_index < len(features):
            raise ConfigError(f"stream {stream_name}: feature index {feature_index} out of range")
        self.feature_index = feature_index
        self._value_key = ((feature_index, "value"),)

    @classmethod
    def from_config(cls, cfg: SourceConfig, ctx: SourceContext) -> MqttValueSource:
        """A source for ``cfg.feature`` of the stream in ``ctx``, subscribed to ``cfg.topic``."""
        feature = ctx.feature_index(cfg)
        assert cfg.topic is not None and feature is not None  # parse_config made sure
        source = cls(ctx.stream, ctx.stream_name, ctx.features, feature, cfg.topic, ctx.sink)
        ctx.subscribe(cfg.topic, source.handle)
        return source

    def handle(self, payload: bytes, arrival: float) -> None:
        """Parse one message (called in the main loop's MQTT poll); ``arrival`` in Unix s."""
        self.messages += 1
        if len(payload) > MAX_PAYLOAD:
            self._bad("too_large", f"payload of {len(payload)} bytes (limit {MAX_PAYLOAD})")
            return
        if payload.lstrip().startswith(b"{"):
            self._hand_on(*parse_json_reading(payload, arrival, self._value_key, self.stream))
            return
        try:
            value = parse_number(payload)
        except ValueError as exc:
            self._bad(str(exc), f"payload is not a number ({exc})")
            return
        self._sink([Reading(self.stream, self.feature_index, arrival, value)])
