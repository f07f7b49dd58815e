"""Logging helpers: rate-limited lines for anything that can repeat per reading, and the
ISO-8601 UTC times logs and payloads show beside Unix seconds."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

__all__ = ["RateLimitedLog", "iso_utc"]


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


def iso_utc(ts: float) -> str:
    """Unix seconds as ISO-8601 UTC (``2026-01-01T00:05:00Z``; milliseconds if fractional)."""
    spec = "seconds" if float(ts).is_integer() else "milliseconds"
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec=spec).replace("+00:00", "Z")
