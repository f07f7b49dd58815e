"""One exception hierarchy; only the CLI turns these into exit codes."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ModelError",
    "PublishError",
    "SensorcastError",
    "SourceError",
    "UpdateError",
]


class SensorcastError(Exception):
    """Root of every error sensorcast raises on purpose.

    The message is one line that names the thing and the fix.
    """


class ConfigError(SensorcastError):
    """The configuration file is missing, unreadable or invalid."""


class ModelError(SensorcastError):
    """A model bundle is missing, unreadable, or does not fit its stream."""


class SourceError(SensorcastError):
    """A sensor source cannot be started."""


class PublishError(SensorcastError):
    """The MQTT broker cannot be reached or refused us."""


class UpdateError(SensorcastError):
    """A model update request was refused (why, in one line); the running model stays."""
