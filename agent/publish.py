"""Turn a forecast into one MQTT message on ``<prefix>/<device>/<stream>/forecast``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from agent.mqtt import MqttLink

__all__ = ["ForecastPublisher", "forecast_topic", "status_topic"]


def status_topic(prefix: str, device: str) -> str:
    """Availability topic: retained ``online``, ``offline`` as will and on shutdown."""
    return f"{prefix}/{device}/status"


def forecast_topic(prefix: str, device: str, stream: str) -> str:
    """Where a stream's forecasts go."""
    return f"{prefix}/{device}/{stream}/forecast"


class ForecastPublisher:
    """Formats forecasts of one stream as JSON and hands them to the link."""

    def __init__(
        self,
        link: MqttLink,
        device: str,
        stream: str,
        prefix: str,
        qos: int,
        targets: tuple[str, ...],
        period_s: float,
        retain: bool = False,
    ) -> None:
        self._link = link
        self._device = device
        self._stream = stream
        self._qos = qos
        self.topic = forecast_topic(prefix, device, stream)
        self._targets = list(targets)
        self._period = period_s
        self._retain = retain
        self.seq = 0

    def publish(self, model: str, window_end: float, values: np.ndarray) -> Any:
        """Publish a ``(horizon, targets)`` forecast for the window ending at ``window_end``.

        ``window_end`` is the start time (Unix s) of the window's newest period;
        step ``i`` (from 0) is the period starting ``(i + 1) * period_s`` later.
        """
        horizon = values.shape[0]
        message = {
            "device": self._device,
            "stream": self._stream,
            "model": model,
            "seq": self.seq,
            "window_end": window_end,
            "period_s": self._period,
            "targets": self._targets,
            "steps": [window_end + (i + 1) * self._period for i in range(horizon)],
            "values": values.tolist(),
        }
        self.seq += 1
        payload = json.dumps(message, separators=(",", ":")).encode()
        return self._link.publish(self.topic, payload, qos=self._qos, retain=self._retain)
