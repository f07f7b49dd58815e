"""What the controller knows of the fleet: plain data, built from the devices' retained
messages (:mod:`sensorcast.agent.fleet.view` fills it), read by ``status`` and ``rollout``."""

from __future__ import annotations

from dataclasses import dataclass, field
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
