"""Configuration: read the TOML file once, validate all of it, return frozen objects.

``schema`` holds the dataclasses (each default defined there once), ``reader`` the typed
getters, ``secrets`` the broker password, ``files`` the checks of named files, ``mqtt``,
``sections`` and ``streams`` the tables, ``load`` the file as a whole. Source tables are
validated by their source types (:mod:`sensorcast.agent.sources.registry`).
"""

from sensorcast.agent.config.load import config_warnings, load_config, parse_config
from sensorcast.agent.config.reader import MAX_SECONDS
from sensorcast.agent.config.schema import (
    Config,
    DeviceConfig,
    HomeAssistantConfig,
    MetricsConfig,
    ModelsConfig,
    MqttConfig,
    QualityConfig,
    SourceConfig,
    StreamConfig,
    UpdatesConfig,
)
from sensorcast.agent.config.secrets import Secret

__all__ = [
    "MAX_SECONDS",
    "Config",
    "DeviceConfig",
    "HomeAssistantConfig",
    "MetricsConfig",
    "ModelsConfig",
    "MqttConfig",
    "QualityConfig",
    "Secret",
    "SourceConfig",
    "StreamConfig",
    "UpdatesConfig",
    "config_warnings",
    "load_config",
    "parse_config",
]
