"""MQTT clients for tests: a real subscriber that collects what arrives."""

from __future__ import annotations

import threading
import uuid
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["Message", "Subscriber"]

#: ``(topic, payload, retained)``.
Message = tuple[str, bytes, bool]


class Subscriber:
    """A real MQTT client collecting messages on a topic filter (QoS 1), subscribed once the
    constructor returns."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout: float = 30) -> bool:
        """Whether ``predicate(messages)`` came true within ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout=timeout)

    def payloads(self, suffix: str) -> list[bytes]:
        """Payloads of the messages whose topic ends with ``suffix``, in order."""
        with self._cond:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
