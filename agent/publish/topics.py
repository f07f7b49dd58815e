"""Every MQTT topic the agent reads or writes, built in one place.

``<prefix>`` is ``mqtt.topic_prefix`` (default ``sensorcast``), ``<device>`` the device id.
The broker ACL in ``deploy/mosquitto-acl.conf`` and docs/config.md ("Broker access control")
list the same topics: change both together.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FLEET", "FleetTopics", "Topics", "discovery_topic"]

#: The device-id level that addresses every device (``<prefix>/fleet/model/set``).
FLEET = "fleet"


@dataclass(frozen=True)
class Topics:
    """The topics of one device under one prefix."""

    prefix: str
    device: str

    @property
    def status(self) -> str:
        """Availability: retained ``online``; ``offline`` as the will and on shutdown."""
        return f"{self.prefix}/{self.device}/status"

    @property
    def metrics(self) -> str:
        """Counters and gauges as JSON, every ``metrics.interval_s``."""
        return f"{self.prefix}/{self.device}/metrics"

    @property
    def model_set(self) -> str:
        """Model update requests for this device."""
        return f"{self.prefix}/{self.device}/model/set"

    @property
    def fleet_model_set(self) -> str:
        """Model update requests for every device under the prefix."""
        return f"{self.prefix}/{FLEET}/model/set"

    @property
    def model_state(self) -> str:
        """Outcome of each update request (retained)."""
        return f"{self.prefix}/{self.device}/model/state"

    def forecast(self, stream: str) -> str:
        """A stream's forecasts."""
        return f"{self.prefix}/{self.device}/{stream}/forecast"

    def quality(self, stream: str) -> str:
        """A stream's forecast-quality report (retained)."""
        return f"{self.prefix}/{self.device}/{stream}/quality"

    def anomaly(self, stream: str) -> str:
        """A stream's anomaly state (retained): ``{"anomaly": true, ...}`` when one starts,
        ``{"anomaly": false, ...}`` when it ends."""
        return f"{self.prefix}/{self.device}/{stream}/anomaly"


@dataclass(frozen=True)
class FleetTopics:
    """What ``sensorcast fleet`` reads and writes under one prefix: every device's retained
    state (filters with ``+`` for the device and the stream), the sites' bridge states and
    the rollouts' own retained state, all under ``<prefix>/fleet/`` (no device is named
    ``fleet``)."""

    prefix: str

    @property
    def statuses(self) -> str:
        return f"{self.prefix}/+/status"

    @property
    def metrics(self) -> str:
        return f"{self.prefix}/+/metrics"

    @property
    def model_states(self) -> str:
        return f"{self.prefix}/+/model/state"

    @property
    def qualities(self) -> str:
        return f"{self.prefix}/+/+/quality"

    @property
    def anomalies(self) -> str:
        return f"{self.prefix}/+/+/anomaly"

    @property
    def bridges(self) -> str:
        return f"{self.prefix}/{FLEET}/sites/+/bridge"

    def bridge(self, site: str) -> str:
        """A site bridge's state: Mosquitto's bridge notification (``notification_topic``),
        retained ``1`` while the site's bridge is connected, ``0`` (its will at the central
        broker) while it is down."""
        return f"{self.prefix}/{FLEET}/sites/{site}/bridge"

    def rollout(self, rollout_id: str) -> str:
        """A rollout's progress (retained JSON), for dashboards and a second controller."""
        return f"{self.prefix}/{FLEET}/rollout/{rollout_id}"

    def model_set(self, device: str) -> str:
        return Topics(self.prefix, device).model_set

    def model_reply(self, device: str, controller: str) -> str:
        """The MQTT 5 response topic a controller names in its requests to ``device`` (the
        device may publish under ``<prefix>/<device>/model/reply/``)."""
        return f"{Topics(self.prefix, device).model_state[: -len('state')]}reply/{controller}"


def discovery_topic(
    discovery_prefix: str, node: str, object_id: str, component: str = "sensor"
) -> str:
    """Home Assistant MQTT discovery: one entity's config (retained); ``component`` is its
    platform (``sensor``, ``binary_sensor``)."""
    return f"{discovery_prefix}/{component}/{node}/{object_id}/config"
