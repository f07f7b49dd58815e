"""The validated configuration: frozen dataclasses, one per table of the TOML file.

A field's default is the key's default in the file, defined here only: the reader takes
it from the field (:class:`~sensorcast.agent.config.reader.Section`). Defaults computed
from other values (``device.id``, ``mqtt.client_id``, ``homeassistant.status_topic``,
``state.dir``) are said in the field's comment and computed where the table is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sensorcast.agent.config.secrets import Secret
from sensorcast.agent.sources.spec import SourceConfig

__all__ = [
    "Config",
    "DeviceConfig",
    "HomeAssistantConfig",
    "MetricsConfig",
    "ModelsConfig",
    "MqttConfig",
    "QualityConfig",
    "SourceConfig",
    "StreamConfig",
    "UpdatesConfig",
]


@dataclass(frozen=True)
class DeviceConfig:
    """``[device]``."""

    #: Device id used in topics; letters, digits, ``_`` and ``-``. Default: the host name.
    id: str
    #: The site (site broker, bridged to a central one) the device is behind; in its metrics
    #: as ``"site"``, so ``sensorcast fleet status`` can tell its devices unreachable while
    #: that site's bridge is down (``<prefix>/fleet/sites/<site>/bridge`` = ``0``).
    site: Optional[str] = None


@dataclass(frozen=True)
class MqttConfig:
    """``[mqtt]``."""

    host: str  #: From ``url``.
    port: int  #: From ``url``: TCP port (default 1883, or 8883 for ``mqtts://``).
    client_id: str  #: Default ``sensorcast-<device id>``.
    url: str = "mqtt://127.0.0.1:1883"  #: ``mqtt://host:port`` or ``mqtts://``, as given.
    #: Every broker of ``url`` when it is a list (tried in order, with failover), as
    #: ``(host, port)``, the first being ``host``/``port``; empty for a single URL.
    brokers: tuple[tuple[str, int], ...] = ()
    topic_prefix: str = "sensorcast"  #: First level of every topic.
    qos: int = 1  #: QoS of forecasts and status: 0, 1 or 2.
    keepalive_s: int = 30  #: MQTT keepalive, seconds (5 to 3600).
    connect_timeout_s: float = 10.0  #: How long start-up waits for the broker, seconds.
    tls: bool = False  #: ``mqtts://``: TLS, hostname verified unless ``tls_insecure``.
    ca_file: Optional[Path] = None  #: CA bundle for the broker's certificate (default: system).
    cert_file: Optional[Path] = None  #: Client certificate (PEM).
    key_file: Optional[Path] = None  #: Client certificate's key (PEM, unencrypted).
    tls_insecure: bool = False  #: Skip hostname verification (testing only).
    username: Optional[str] = None  #: Broker user name; needed with a password.
    password: Optional[Secret] = None  #: Never printed.
    #: ``mqtt.password_env``: the variable's name, kept out of ``command`` sources' environment.
    password_env: Optional[str] = None
    protocol: str = "3.1.1"  #: ``3.1.1`` or ``5``.
    reconnect_min_s: float = 1.0  #: First reconnect delay, seconds; doubles up to the max.
    reconnect_max_s: float = 60.0  #: Longest reconnect delay, seconds.
    #: Retain each stream's last forecast on the broker; default (None): retained while Home
    #: Assistant discovery is on (its sensors then keep their attributes across its restarts).
    retain: Optional[bool] = None
    #: Persistent session: the broker keeps the agent's subscriptions and queues its input
    #: readings while it is away (reconnecting, restarting) for this long, seconds; 0: clean
    #: session.
    session_expiry_s: int = 86400


@dataclass(frozen=True)
class StreamConfig:
    """One ``[[streams]]`` entry."""

    name: str  #: Stream name used in topics.
    model: Path  #: Bundle path, resolved relative to the config file.
    input_topic: Optional[str] = None  #: MQTT topic with JSON ``{"ts": s, "<feature>": n}``.
    features: Optional[tuple[str, ...]] = None  #: If set, must equal the model's, in order.
    resample: str = "mean"  #: ``mean`` or ``last``: how readings in one period combine.
    max_gap_s: Optional[float] = None  #: Longest carry-forward, seconds; default 3 periods.
    close_delay_s: Optional[float] = None  #: Wait after a period ends to close it, seconds.
    max_future_s: Optional[float] = None  #: How far ahead of the clock a timestamp may be, s.
    sources: tuple[SourceConfig, ...] = ()  #: Inputs besides ``input_topic``.
    retain: Optional[bool] = None  #: Retain the last forecast (default: ``mqtt.retain``'s).
    rollout_steps: Optional[int] = None  #: Roll a single-step model out this many steps.
    #: Units of the targets (``{"temperature": "°C"}``), for Home Assistant.
    units: tuple[tuple[str, str], ...] = ()
    #: Nominal coverage of the published prediction interval (``lower``/``upper``), 0.5-0.98.
    level: float = 0.8
    #: ``"last_value"``: publish the naive forecast while the model loses to it; None: never.
    fallback: Optional[str] = None
    #: How long the model's rolling skill must stay below zero before the fallback, seconds.
    fallback_after_s: float = 3600.0
    #: A second bundle run on the same windows, tracked, never published as the stream's.
    #: Default: ``<model>.shadow`` when that file exists (where ``"shadow": true`` updates go).
    shadow_model: Optional[Path] = None
    #: Promote the shadow by itself when it beats the live model (see ``promote_*``).
    auto_promote: bool = False
    #: The shadow's rolling MAE must be below ``(1 - promote_margin)`` x the live model's ...
    promote_margin: float = 0.1
    #: ... for this long (seconds), on at least ``quality.min_samples`` residuals per step.
    promote_after_s: float = 86400.0


@dataclass(frozen=True)
class HomeAssistantConfig:
    """``[homeassistant]``: MQTT discovery."""

    enabled: bool = True  #: Publish discovery configs.
    discovery_prefix: str = "homeassistant"  #: Where discovery configs go.
    #: Home Assistant's birth/will topic; default ``<discovery_prefix>/status``.
    status_topic: str = "homeassistant/status"


@dataclass(frozen=True)
class QualityConfig:
    """``[quality]``: forecast-vs-actual telemetry and drift detection."""

    enabled: bool = True  #: Track forecast errors against arriving actuals.
    samples: int = 200  #: Residuals kept per forecast step for the rolling MAE (10-100000).
    drift_factor: float = 2.0  #: Drift: rolling MAE above this many times the promised MAE ...
    drift_after_s: float = 3600.0  #: ... for this long, seconds.
    #: Residuals per step a figure (coverage, skill, ratio) needs before it is reported.
    min_samples: int = 20
    #: Raise anomalies on ``<prefix>/<device>/<stream>/anomaly`` when actuals leave the band.
    anomaly: bool = True
    #: Nominal coverage of the (wider) band whose exits count as anomalous, 0.9-0.9999.
    anomaly_level: float = 0.99
    #: An anomaly starts after this many consecutive periods outside that band.
    anomaly_periods: int = 2
    #: A sensor is stuck after this many periods with the very same value while the forecast
    #: expected it to move.
    stuck_periods: int = 6
    #: A dropout: this many consecutive periods closed with no reading.
    dropout_periods: int = 2
    #: At most one quality report per stream this often, seconds (at once when drift starts
    #: or ends); a fleet rollout's soak reads them.
    interval_s: float = 60.0


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: counters and gauges over MQTT and, optionally, for Prometheus."""

    interval_s: float = 60.0  #: JSON on ``<prefix>/<device>/metrics`` this often, s; 0: never.
    prometheus_port: int = 0  #: Serve ``/metrics`` on this TCP port; 0: no endpoint.
    prometheus_address: str = "127.0.0.1"  #: Interface for it; ``0.0.0.0`` for all.


@dataclass(frozen=True)
class UpdatesConfig:
    """``[updates]``: model updates over MQTT."""

    enabled: bool = True  #: Listen on ``model/set``; requests are refused unless opened below.
    max_bytes: int = 50 * 1024 * 1024  #: Largest bundle accepted, bytes.
    timeout_s: float = 60.0  #: Deadline for a whole download (connect to last byte), seconds.
    public_key: Optional[Path] = None  #: Ed25519 public key (PEM): only signed bundles then.
    #: Accept bundles without a signature (no ``public_key``): anyone who can publish to
    #: ``model/set`` then replaces the model. Off by default; ``check`` and the log warn.
    allow_unsigned: bool = False
    #: Accept a bundle whose manifest ``created`` is older than the running model's.
    allow_downgrade: bool = False

    @property
    def mode(self) -> str:
        """``signed`` (public_key), ``unsigned`` (allow_unsigned) or ``closed``."""
        if self.public_key is not None:
            return "signed"
        return "unsigned" if self.allow_unsigned else "closed"


@dataclass(frozen=True)
class ModelsConfig:
    """``[models]``: limits on reading model bundles."""

    #: Largest model bundle read (start, ``info``, ``check``, hot reload, update), bytes.
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class Config:
    """The whole validated configuration.

    ``log_level`` comes from ``[log] level``, ``state_dir`` from ``[state] dir`` and the
    ``outbox_*`` fields from ``[outbox]``.
    """

    path: Path  #: The config file.
    device: DeviceConfig
    mqtt: MqttConfig
    streams: tuple[StreamConfig, ...]
    #: Outbox and snapshots; default ``$STATE_DIRECTORY`` (systemd), else
    #: ``$XDG_STATE_HOME/sensorcast`` (``~/.local/state/sensorcast``).
    state_dir: Path
    log_level: str = "info"  #: debug, info, warning or error.
    outbox_max_messages: int = 10_000  #: Outbox bound, messages (>= 1).
    outbox_max_bytes: int = 8 * 1024 * 1024  #: Outbox bound, payload bytes (>= 1024).
    outbox_synchronous: str = "normal"  #: SQLite synchronous: off, normal, full.
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    quality: QualityConfig = QualityConfig()
    metrics: MetricsConfig = MetricsConfig()
    updates: UpdatesConfig = UpdatesConfig()
    models: ModelsConfig = ModelsConfig()
