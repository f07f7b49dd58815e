"""Rate-limited logging for anything that can repeat per reading."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Log at most one line per key every ``interval_s`` seconds, with a count of the rest."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval_s
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        """Log ``msg % args`` under ``key`` unless one was logged within the interval."""
        now = time.monotonic()
        if now < self._next.get(key, 0.0):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._next[key] = now + self._interval
        skipped = self._suppressed.pop(key, 0)
        if skipped:
            self._logger.warning(msg + " (%d more like this not logged)", *args, skipped)
        else:
            self._logger.warning(msg, *args)
