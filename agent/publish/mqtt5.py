"""MQTT 5 properties: what the agent reads from requests and sets on what it publishes.

A request (``model/set``) may carry a response topic and correlation data (:class:`Reply`):
the answer goes there too, with the same correlation data. In MQTT 3.1.1 there are no
properties and none of this applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["Reply", "ReplyHandler", "reply_of"]


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
