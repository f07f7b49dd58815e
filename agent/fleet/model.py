"""What the controller knows of the fleet: plain data, built from the devices' retained
messages (:mod:`sensorcast.agent.fleet.view` fills it), read by ``status`` and ``rollout``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

__all__ = ["Device", "Fleet", "StreamState", "sha_of_label"]


def sha_of_label(label: Optional[str]) -> Optional[str]:
    """The sha256 prefix of a model label (``room@dd9129743d00`` -> ``dd9129743d00``)."""
    if not label or "@" not in label:
        return None
    return label.rsplit("@", 1)[1]


@dataclass
class StreamState:
    """One stream of one device."""

    name: str
    model: Optional[str] = None  #: Live model label, from the metrics or the quality report.
    shadow: Optional[str] = None  #: Shadow model label (None: no shadow runs).
    last_forecast: Optional[float] = None  #: Unix s of the last forecast (metrics).
    skill: dict[str, Optional[float]] = field(default_factory=dict)  #: By baseline.
    coverage: Optional[float] = None  #: Empirical coverage of the published band.
    drift: bool = False
    anomaly: bool = False
    fallback: bool = False
    #: The last retained quality message (its ``"shadow"`` has the shadow's own report:
    #: ``mae_ratio``, ``skill``, ``coverage``, ``drift``, ``errors``, ``forecasts``...).
    quality: Optional[dict[str, Any]] = None
    quality_time: Optional[float] = None  #: Its ``time`` (the device's clock, Unix s).
    #: Time (device clock, Unix s) of the message ``model``/``shadow`` came from: the metrics
    #: and the quality report both name them, the newer one wins whatever order they arrive.
    model_time: Optional[float] = None

    def copy(self) -> StreamState:
        """A copy sharing the message bodies (the view replaces them, never changes them)."""
        return replace(self, skill=dict(self.skill))


@dataclass
class Device:
    """One device, as its retained messages describe it."""

    id: str
    status: str = "unknown"  #: ``online``, ``offline`` (its will or shutdown) or ``unknown``.
    site: Optional[str] = None  #: ``device.site`` (from its metrics).
    version: Optional[str] = None  #: Agent version (metrics ``build.version``).
    metrics_time: Optional[float] = None  #: When its last metrics were made (Unix s).
    started: Optional[float] = None  #: When the running agent started (metrics), Unix s.
    streams: dict[str, StreamState] = field(default_factory=dict)
    model_state: Optional[dict[str, Any]] = None  #: Its last ``model/state`` message.
    anomalies: dict[str, dict[str, Any]] = field(default_factory=dict)  #: By stream.

    def copy(self) -> Device:
        """A copy whose streams and tables are its own (message bodies shared)."""
        streams = {name: s.copy() for name, s in self.streams.items()}
        return replace(self, streams=streams, anomalies=dict(self.anomalies))

    def stream(self, name: str) -> StreamState:
        """The stream ``name``, created empty if no message named it yet."""
        found = self.streams.get(name)
        if found is None:
            found = self.streams[name] = StreamState(name)
        return found


@dataclass
class Fleet:
    """Every device seen under one prefix, and the sites' bridges."""

    prefix: str
    devices: dict[str, Device] = field(default_factory=dict)
    bridges: dict[str, bool] = field(default_factory=dict)  #: Site -> bridge connected.
    time: float = 0.0  #: When this view was taken (the controller's clock), Unix s.
    errors: int = 0  #: Device messages ignored: malformed JSON, payloads of the wrong shape.
    messages: int = 0  #: Messages under the prefix the view was given (errors included).
    #: False: the broker dropped part of the retained state on its way to the controller
    #: (its queue per client overflowed): some devices may be missing or partly known.
    complete: bool = True

    def copy(self) -> Fleet:
        """A consistent copy to read while the live view moves on (no deep copy of the
        message bodies: :func:`~sensorcast.agent.fleet.view.apply` replaces them whole)."""
        devices = {key: d.copy() for key, d in self.devices.items()}
        return replace(self, devices=devices, bridges=dict(self.bridges))

    def reachable(self, device: Device) -> bool:
        """Online, and not behind a site whose bridge is down (its retained ``online`` at the
        central broker is then frozen, not fresh)."""
        if device.status != "online":
            return False
        return not (device.site is not None and self.bridges.get(device.site) is False)

    def state(self, device: Device) -> str:
        """``online``, ``offline``, ``unknown`` or ``unreachable`` (site bridge down)."""
        if device.site is not None and self.bridges.get(device.site) is False:
            return "unreachable"
        return device.status
