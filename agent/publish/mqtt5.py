"""MQTT 5 properties: what the agent reads from requests and sets on what it publishes.

A request (``model/set``) may carry a response topic and correlation data (:class:`Reply`):
the answer goes there too, with the same correlation data. In MQTT 3.1.1 there are no
properties and none of this applies.

Every JSON message the agent publishes (:data:`SCHEMAS`: forecast, quality, metrics,
anomaly, model/state and the answers to requests) carries, in MQTT 5 (:class:`Stamps`):

* content type ``application/json`` and payload format indicator 1 (UTF-8 text), so a
  generic MQTT 5 tool shows and decodes it without guessing;
* the user property ``("schema", "sensorcast.<kind>/<version>")``. The version changes only
  when a consumer written for the old one would misread the new one (a key removed,
  renamed or changing its meaning); new keys are added without a new version;
* forecasts: a message expiry interval, the staleness limit Home Assistant is told
  (``expire_after``, three periods and at least a minute) less the time the forecast
  waited in the outbox, so a broker never hands out a forecast older than that. A
  forecast that waited longer (an outage) is still sent, with the minimum expiry of
  :data:`MIN_EXPIRY_S`, counted in :attr:`Stamps.late` and logged (rate-limited): the
  outbox promises that an outage loses nothing, and a subscriber online now (a recorder)
  still gets it, while the broker does not keep it for anyone else.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.publish.topics import Topics

__all__ = [
    "CONTENT_TYPE",
    "MIN_EXPIRY_S",
    "SCHEMAS",
    "SCHEMA_PROPERTY",
    "Reply",
    "ReplyHandler",
    "Stamps",
    "reply_of",
]

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
SCHEMA_PROPERTY = "schema"  #: The user property that names a payload's schema.
#: Payload kind -> schema name and version (the user property's value).
SCHEMAS = {
    "forecast": "sensorcast.forecast/1",
    "quality": "sensorcast.quality/1",
    "metrics": "sensorcast.metrics/1",
    "anomaly": "sensorcast.anomaly/1",
    "model_state": "sensorcast.model-state/1",
}
MIN_EXPIRY_S = 1  #: Expiry of a forecast sent after its staleness limit, seconds.
MAX_CACHED = 1024  #: Topics whose properties are kept for reuse (a few per stream).
_STREAM_KINDS = ("forecast", "quality", "anomaly")  # <prefix>/<device>/<stream>/<kind>


@dataclass(frozen=True)
class Reply:
    """Where an MQTT 5 request wants its answer: the message's response topic and
    correlation data (to be echoed back unchanged)."""

    topic: str
    correlation: Optional[bytes] = None


#: A handler subscribed ``with_reply``: ``(payload, arrival unix s, Reply or None)``.
ReplyHandler = Callable[[bytes, float, Optional[Reply]], None]


def reply_of(msg: Any) -> Optional[Reply]:
    """The response topic and correlation data of an MQTT 5 message (a paho
    ``MQTTMessage``), if it has them."""
    props = getattr(msg, "properties", None)
    topic = getattr(props, "ResponseTopic", None) if props is not None else None
    if not isinstance(topic, str) or not topic:
        return None
    correlation = getattr(props, "CorrelationData", None)
    return Reply(topic, bytes(correlation) if correlation is not None else None)


class Stamps:
    """The publish properties of each message, from its topic (main loop only).

    ``staleness_s(stream)``: the stream's staleness limit in seconds (None: an unknown
    stream, no expiry). With ``v5`` false (MQTT 3.1.1) no properties are made, but late
    forecasts are still counted: Home Assistant shows them as fresh all the same.
    """

    def __init__(
        self, topics: Topics, staleness_s: Callable[[str], Optional[int]], v5: bool
    ) -> None:
        self._base = f"{topics.prefix}/{topics.device}/"
        self._staleness_s = staleness_s
        self.v5 = v5
        #: Forecasts that had waited in the outbox past their staleness limit when sent.
        self.late = 0
        self._log = RateLimitedLog(logger, 60.0)
        self._made: dict[str, tuple[Optional[int], Properties]] = {}  # topic -> last made

    def kind(self, topic: str) -> Optional[tuple[str, str]]:
        """``(kind, stream)`` of a topic the agent publishes JSON on (stream ``""`` for
        the device's own topics), None for any other (status, discovery)."""
        if not topic.startswith(self._base):
            return None
        rest = topic[len(self._base) :]
        if rest == "metrics":
            return "metrics", ""
        if rest == "model/state":
            return "model_state", ""
        stream, _, kind = rest.rpartition("/")
        if stream and "/" not in stream and kind in _STREAM_KINDS:
            return kind, stream
        return None

    def properties(
        self,
        topic: str,
        queued_at: Optional[float],
        now: float,
        default: Optional[str] = None,
        correlation: Optional[bytes] = None,
    ) -> Optional[Properties]:
        """The PUBLISH properties for a message on ``topic`` (None: none to set).

        ``queued_at``: when the message was put in the outbox (Unix s; None for a message
        not from the outbox, or from an outbox file older than that column: then a forecast
        is taken as late). ``default``: the kind of a message on a topic :meth:`kind` does
        not know (the answer to a request, on the requester's response topic).
        ``correlation``: the request's correlation data, echoed in the answer.
        """
        found = self.kind(topic)
        if found is None:
            if default is None:
                return None
            found = default, ""
        kind, stream = found
        expiry = self._expiry(stream, queued_at, now) if kind == "forecast" else None
        if not self.v5:
            return None
        # paho's Properties cost ~50 us to fill, and only their packing reads them (paho
        # never changes them): the same ones serve a topic until its expiry differs
        cached = self._made.get(topic) if correlation is None else None
        if cached is not None and cached[0] == expiry:
            return cached[1]
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = CONTENT_TYPE
        props.PayloadFormatIndicator = 1
        props.UserProperty = [(SCHEMA_PROPERTY, SCHEMAS[kind])]
        if expiry is not None:
            props.MessageExpiryInterval = expiry
        if correlation is not None:
            props.CorrelationData = correlation  # one answer's own: not kept for reuse
        elif len(self._made) < MAX_CACHED:
            self._made[topic] = (expiry, props)
        return props

    def _expiry(self, stream: str, queued_at: Optional[float], now: float) -> Optional[int]:
        """Seconds a forecast of ``stream`` queued at ``queued_at`` may still be handed out."""
        limit = self._staleness_s(stream)
        if limit is None:
            return None
        # a clock set back (NTP after a boot without RTC) must not lengthen the limit
        left = None if queued_at is None else math.floor(limit - max(0.0, now - queued_at))
        if left is not None and left >= MIN_EXPIRY_S:
            return left
        self.late += 1
        self._log.warning(
            f"late:{stream}",
            "stream %s: a forecast waited in the outbox %s, past its staleness limit of %d s; "
            "sent %s (%d late since start)",
            stream,
            "since before an upgrade" if queued_at is None else f"{now - queued_at:.0f} s",
            limit,
            f"with a message expiry of {MIN_EXPIRY_S} s" if self.v5 else "all the same",
            self.late,
        )
        return MIN_EXPIRY_S
