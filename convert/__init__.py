"""sensorcast converter (build time): Keras model -> verified TFLite bundle.

Needs TensorFlow (the ``[convert]`` extra). Shares the bundle format and the
runtime loader with :mod:`agent`, so both sides agree on what a bundle is.
"""

from __future__ import annotations

from agent.errors import SensorcastError

__all__ = ["ConvertError"]


class ConvertError(SensorcastError):
    """The model, its data or the conversion failed; the message says what to do."""
