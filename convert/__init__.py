"""sensorcast converter (build time): Keras model -> verified TFLite bundle.

Needs TensorFlow (the ``[convert]`` extra). Shares the bundle format and the
runtime loader with :mod:`agent`, so both sides agree on what a bundle is.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Optional

from sensorcast.agent.errors import SensorcastError

__all__ = ["ConvertError", "run_command"]


class ConvertError(SensorcastError):
    """The model, its data or the conversion failed; the message says what to do."""


def run_command(
    name: str,
    parser: argparse.ArgumentParser,
    action: Callable[[argparse.Namespace], Any],
    argv: Optional[list[str]],
) -> int:
    """What ``sensorcast convert|train|evaluate`` share: parse, log to stderr, quiet
    TensorFlow's C++ logs, and turn a :class:`SensorcastError` into one line and exit 1."""
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        action(args)
    except SensorcastError as exc:
        print(f"sensorcast {name}: error: {exc}", file=sys.stderr)
        return 1
    return 0
