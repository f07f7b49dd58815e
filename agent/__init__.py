"""sensorcast agent: reads sensors, runs a TFLite forecaster, publishes to MQTT.

This package is the run-time side and never imports TensorFlow or ``convert``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
