"""Turn a forecast into one MQTT message on ``<prefix>/<device>/<stream>/forecast``, and an
anomaly into one on ``<prefix>/<device>/<stream>/anomaly``."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import orjson
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.publish.topics import Topics

__all__ = ["ForecastPublisher"]


class ForecastPublisher:
    """Formats forecasts of one stream as JSON and puts them in the outbox."""

    def __init__(
        self,
        outbox: Outbox,
        device: str,
        stream: str,
        prefix: str,
        qos: int,
        targets: tuple[str, ...],
        period_s: float,
        retain: bool = False,
    ) -> None:
        #: Where :meth:`publish` puts messages (public: a bench or test may put another
        #: :class:`Outbox`, e.g. an in-memory one, in its place).
        self.outbox = outbox
        self._device = device
        self._stream = stream
        self._qos = qos
        topics = Topics(prefix, device)
        self.topic = topics.forecast(stream)
        self.anomaly_topic = topics.anomaly(stream)
        self._targets = list(targets)
        self._period = period_s
        self._retain = retain
        self.seq = 0
        self._id = f"{device}/{stream}/"
        self._offsets: Optional[np.ndarray] = None  # (i + 1) * period_s, per horizon step
        self._steps = np.empty(0)  # the steps' times of the message being built

    def publish(
        self,
        model: str,
        window_end: float,
        values: np.ndarray,
        out_of_range: bool = False,
        *,
        fallback: Optional[str] = None,
        level: float = 0.8,
        band: Optional[tuple[np.ndarray, np.ndarray]] = None,
    ) -> int:
        """Queue a ``(horizon, targets)`` forecast for the window ending at ``window_end``.

        ``window_end`` is the start time (Unix s) of the window's newest period;
        step ``i`` (from 0) is the period starting ``(i + 1) * period_s`` later.
        The message's ``id`` is stable (device, stream, window end) so consumers
        can drop the duplicates QoS 1 may deliver. ``out_of_range``: the window had a
        value outside the range the model was verified on; ``fallback``: the values are
        this naive baseline's, not the model's; ``band``: ``(lower, upper)`` shaped like
        ``values`` at nominal coverage ``level`` (None: not known yet). Returns the outbox id.
        """
        payload = self.payload(
            model, window_end, values, out_of_range, fallback=fallback, level=level, band=band
        )
        self.seq += 1
        return self.outbox.put(self.topic, payload, self._qos, self._retain)

    def payload(
        self,
        model: str,
        window_end: float,
        values: np.ndarray,
        out_of_range: bool = False,
        *,
        fallback: Optional[str] = None,
        level: float = 0.8,
        band: Optional[tuple[np.ndarray, np.ndarray]] = None,
    ) -> bytes:
        """The JSON message (compact, keys in a fixed order) for one forecast.

        Every key is always there (``"out_of_range": false``, ``"fallback": null``,
        ``"lower": null`` too): consumers and Home Assistant's templates read one shape.
        Numbers are the shortest text that reads back as the same float; a non-finite
        forecast value (a broken model) is ``null``, which every JSON parser reads.
        """
        offsets = self._offsets
        if offsets is None or len(offsets) != values.shape[0]:
            offsets = self._offsets = np.arange(1, values.shape[0] + 1) * self._period
            self._steps = np.empty_like(offsets)
        steps = np.add(offsets, window_end, out=self._steps)  # serialized before reused
        lower, upper = (None, None) if band is None else (_c(band[0]), _c(band[1]))
        message = {
            "id": f"{self._id}{round(window_end * 1000)}",
            "device": self._device,
            "stream": self._stream,
            "model": model,
            "out_of_range": out_of_range,
            "fallback": fallback,
            "seq": self.seq,
            "window_end": window_end,
            "period_s": self._period,
            "targets": self._targets,
            "steps": steps,
            "values": _c(values),
            "level": level,
            "lower": lower,
            "upper": upper,
        }
        # orjson (numpy arrays natively): a fifth of the hand-formatted text's cost.
        return orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)

    def publish_anomaly(self, model: str, anomaly: dict[str, Any]) -> int:
        """Queue an anomaly detector's message (``model`` added) on the stream's anomaly
        topic, retained: the last one says whether an anomaly is open. Returns the outbox
        id."""
        body = orjson.dumps({**anomaly, "model": model}, option=orjson.OPT_SERIALIZE_NUMPY)
        return self.outbox.put(self.anomaly_topic, body, self._qos, True)


def _c(values: np.ndarray) -> np.ndarray:
    """C-contiguous, as orjson serializes numpy arrays."""
    return values if values.flags.c_contiguous else np.ascontiguousarray(values)
