"""The fleet as its retained messages describe it: :func:`apply` folds one message into a
:class:`~sensorcast.agent.fleet.model.Fleet`.

Pure and cheap (no I/O, no clock): the controller's MQTT thread calls it for every message.
The topics are the agents' own (:class:`~sensorcast.agent.publish.topics.Topics`) and the
sites' bridge states (:class:`~sensorcast.agent.publish.topics.FleetTopics`):

- ``<prefix>/<dev>/status``: ``online`` / ``offline``;
- ``<prefix>/<dev>/metrics``: site, version, start time, and per stream the live and shadow
  model, the last forecast, skill, coverage and the drift/anomaly/fallback flags;
- ``<prefix>/<dev>/<stream>/quality``: the stream's quality report (kept whole: a rollout's
  gate reads the shadow's part), its time, the live and shadow model;
- ``<prefix>/<dev>/<stream>/anomaly``: the stream's anomaly state;
- ``<prefix>/<dev>/model/state``: the outcome of the device's last model update request;
- ``<prefix>/fleet/sites/<site>/bridge``: ``1`` while the site's bridge is up, ``0`` down.

An empty payload is how a retained message is cleared: the part it described goes, and a
device with nothing left goes with it. A payload of the wrong shape is counted in
``fleet.errors`` and logged at a limited rate, never raised: one broken device must not
stop the controller from showing the others.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Optional

from sensorcast.agent.fleet.model import Device, Fleet, StreamState
from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.publish.topics import FLEET

__all__ = ["apply"]

logger = logging.getLogger(__name__)
_log = RateLimitedLog(logger, interval_s=30.0)

_STATUSES = {"online", "offline"}


class _Bad(ValueError):
    """A message of the wrong shape (why, for the log)."""


def apply(fleet: Fleet, topic: str, payload: bytes) -> None:
    """Fold one (retained or live) message on ``topic`` into ``fleet``."""
    head = fleet.prefix + "/"
    if not topic.startswith(head):
        return  # not under our prefix: not device state
    fleet.messages += 1
    levels = topic[len(head) :].split("/")
    try:
        _dispatch(fleet, levels, payload)
    except _Bad as exc:
        fleet.errors += 1
        _log.warning(levels[-1], "fleet view: ignored %s: %s", topic, exc)


def _dispatch(fleet: Fleet, levels: list[str], payload: bytes) -> None:
    if levels[0] == FLEET:
        if len(levels) == 4 and levels[1] == "sites" and levels[3] == "bridge":
            _bridge(fleet, levels[2], payload)
        return  # the controllers' own topics (rollouts), not device state
    if not levels[0] or len(levels) not in (2, 3):
        return  # not device state (a controller's reply topic, say)
    device, kind = levels[0], tuple(levels[1:])
    if kind == ("status",):
        _status(fleet, device, payload)
    elif kind == ("metrics",):
        _metrics(fleet, device, payload)
    elif kind == ("model", "state"):
        _model_state(fleet, device, payload)
    elif len(kind) == 2 and kind[1] == "quality" and kind[0]:
        _quality(fleet, device, kind[0], payload)
    elif len(kind) == 2 and kind[1] == "anomaly" and kind[0]:
        _anomaly(fleet, device, kind[0], payload)


def _bridge(fleet: Fleet, site: str, payload: bytes) -> None:
    text = payload.strip()
    if not text:
        fleet.bridges.pop(site, None)
    elif text in (b"1", b"0"):
        fleet.bridges[site] = text == b"1"
    else:
        raise _Bad(f"bridge state {payload[:20]!r}: want 1 or 0")


def _status(fleet: Fleet, device: str, payload: bytes) -> None:
    text = payload.strip().decode("utf-8", "replace")
    if not text:
        found = fleet.devices.get(device)
        if found is not None:
            found.status = "unknown"
            _prune(fleet, found)
        return
    if text not in _STATUSES:
        raise _Bad(f"status {text[:20]!r}: want online or offline")
    _device(fleet, device).status = text


def _metrics(fleet: Fleet, device: str, payload: bytes) -> None:
    if not payload.strip():
        _clear_metrics(fleet, device)
        return
    body = _object(payload)
    build = body.get("build")
    streams = body.get("streams", {})
    if not isinstance(build, dict) or not isinstance(streams, dict):
        raise _Bad("metrics without a build and streams object")
    parsed = {name: _metric_stream(s) for name, s in streams.items()}
    when = _number(body, "time")
    site, version, started = _text(body, "site"), _text(build, "version"), _number(body, "started")
    dev = _device(fleet, device)  # only once all of it was read: a bad message changes nothing
    dev.site, dev.version, dev.started, dev.metrics_time = site, version, started, when
    for name, fields in parsed.items():
        _fill(dev.stream(name), fields, when)
    for name in [n for n, s in dev.streams.items() if n not in parsed and s.quality is None]:
        del dev.streams[name]  # a stream the device no longer runs


def _metric_stream(raw: Any) -> dict[str, Any]:
    """The fields the view keeps of one stream in the metrics (checked)."""
    if not isinstance(raw, dict):
        raise _Bad("a metrics stream is not an object")
    skill = raw.get("skill") or {}
    shadow = raw.get("shadow")
    if not isinstance(skill, dict) or not (shadow is None or isinstance(shadow, dict)):
        raise _Bad("a metrics stream's skill or shadow is not an object")
    return {
        "model": _text(raw, "model"),
        "shadow": _text(shadow, "model") if shadow is not None else None,
        "last_forecast": _number(raw, "last_forecast"),
        "skill": {str(k): _number(skill, k) for k in skill},
        "coverage": _number(raw, "coverage"),
        "drift": bool(raw.get("drift")),
        "anomaly": bool(raw.get("anomaly")),
        "fallback": bool(raw.get("fallback")),
    }


def _fill(stream: StreamState, fields: dict[str, Any], when: Optional[float]) -> None:
    labels = {"model": fields.pop("model"), "shadow": fields.pop("shadow")}
    for key, value in fields.items():
        setattr(stream, key, value)
    _labels(stream, labels["model"], labels["shadow"], when)


def _labels(
    stream: StreamState, model: Optional[str], shadow: Optional[str], when: Optional[float]
) -> None:
    """Live and shadow labels from a message made at ``when``: the newer message wins."""
    newer = stream.model_time is None or (when is not None and when >= stream.model_time)
    if newer:
        stream.model, stream.shadow = model, shadow
        stream.model_time = when if when is not None else stream.model_time


def _clear_metrics(fleet: Fleet, device: str) -> None:
    dev = fleet.devices.get(device)
    if dev is None:
        return
    dev.site = dev.version = dev.started = dev.metrics_time = None
    for name in [n for n, s in dev.streams.items() if s.quality is None]:
        del dev.streams[name]
    _prune(fleet, dev)


def _quality(fleet: Fleet, device: str, stream: str, payload: bytes) -> None:
    if not payload.strip():
        dev = fleet.devices.get(device)
        if dev is not None and stream in dev.streams:
            found = dev.streams[stream]
            found.quality = found.quality_time = None
            if dev.metrics_time is None:  # the metrics do not name it either
                del dev.streams[stream]
            _prune(fleet, dev)
        return
    body = _object(payload)
    shadow = body.get("shadow")
    if not (shadow is None or isinstance(shadow, dict)):
        raise _Bad("quality shadow is not an object")
    when = _number(body, "time")
    model = _text(body, "model")
    shadow_label = _text(shadow, "model") if shadow is not None else None
    found = _device(fleet, device).stream(stream)
    found.quality, found.quality_time = body, when
    _labels(found, model, shadow_label, when)


def _anomaly(fleet: Fleet, device: str, stream: str, payload: bytes) -> None:
    if not payload.strip():
        dev = fleet.devices.get(device)
        if dev is not None:
            dev.anomalies.pop(stream, None)
            _prune(fleet, dev)
        return
    body = _object(payload)
    _device(fleet, device).anomalies[stream] = body


def _model_state(fleet: Fleet, device: str, payload: bytes) -> None:
    if not payload.strip():
        dev = fleet.devices.get(device)
        if dev is not None:
            dev.model_state = None
            _prune(fleet, dev)
        return
    body = _object(payload)
    if not isinstance(body.get("status"), str):
        raise _Bad("model state without a status")
    _device(fleet, device).model_state = body


def _device(fleet: Fleet, device: str) -> Device:
    found = fleet.devices.get(device)
    if found is None:
        found = fleet.devices[device] = Device(device)
    return found


def _prune(fleet: Fleet, dev: Device) -> None:
    """Forget a device none of whose retained messages is left."""
    empty = dev.status == "unknown" and dev.metrics_time is None and dev.model_state is None
    if empty and not dev.anomalies and not any(s.quality for s in dev.streams.values()):
        del fleet.devices[dev.id]


def _object(payload: bytes) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _Bad(f"not JSON ({str(exc)[:60]})") from None
    if not isinstance(body, dict):
        raise _Bad("not a JSON object")
    return body


def _number(body: dict[str, Any], key: str) -> Optional[float]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"{key}: not a number")
    return float(value)


def _text(body: dict[str, Any], key: str) -> Optional[str]:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _Bad(f"{key}: not a string")
