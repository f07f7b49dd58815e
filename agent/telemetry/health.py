"""A health file the running agent refreshes, and the check behind ``sensorcast health``.

The main loop rewrites ``<state dir>/health-<device>.json`` every few seconds
(atomically), so the file's age says whether the loop makes progress. A
container HEALTHCHECK or a monitoring script runs ``sensorcast health``, which
reads it and exits 0 (healthy) or 1 with a one-line reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

__all__ = ["HealthFile", "check_health", "health_path"]

WRITE_S = 5.0  #: How often the loop rewrites the file.
#: How much later than :data:`WRITE_S` a write may come (it rides along with another turn of
#: an idle loop instead of waking it), seconds.
LATE_S = 2.0
MAX_AGE_S = 30.0  #: Older than this, the loop is considered stuck or the agent gone.


def health_path(state_dir: Path, device: str) -> Path:
    return state_dir / f"health-{device}.json"


class HealthFile:
    """Written by the main loop; failures to write are reported by the caller's log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._next = 0.0
        self.error: Optional[str] = None  #: Why the last write failed, if it did.

    def due(self, monotonic_now: float) -> bool:
        return monotonic_now >= self._next

    def next_due(self) -> float:
        """Monotonic time by which the loop must turn for the next write: :data:`WRITE_S`
        after the last, at the latest :data:`LATE_S` after that."""
        return self._next + LATE_S

    def write(self, state: dict[str, Any], monotonic_now: float) -> None:
        self._next = monotonic_now + WRITE_S
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"time": time.time(), "pid": os.getpid(), **state}))
            os.replace(tmp, self.path)
            self.error = None
        except OSError as exc:
            self.error = str(exc)

    def remove(self) -> None:
        """At a clean shutdown: a stopped agent is not healthy."""
        with contextlib.suppress(OSError):
            self.path.unlink()


def check_health(path: Path, max_age_s: float = MAX_AGE_S) -> tuple[bool, str]:
    """``(healthy, one-line reason)`` from the agent's health file."""
    try:
        data = json.loads(path.read_text())
        written = float(data["time"])
    except FileNotFoundError:
        return False, f"no health file {path}: is the agent running with this config?"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"health file {path} unreadable: {exc}"
    age = time.time() - written
    if age > max_age_s:
        return False, (
            f"agent's main loop last reported {age:.0f} s ago (more than {max_age_s:g} s): "
            "stuck, not running, or its state directory cannot be written"
        )
    since = data.get("disconnected_since")
    if since is not None and time.time() - float(since) > max_age_s:
        depth = data.get("outbox_depth", 0)
        return False, (
            f"not connected to the MQTT broker for {time.time() - float(since):.0f} s "
            f"({depth} forecasts queued in the outbox)"
        )
    degraded = data.get("degraded")
    streams = data.get("streams", 0)
    detail = f"; durability degraded: {degraded}" if degraded else ""
    return True, (
        f"healthy: {streams} streams, {data.get('forecasts', 0)} forecasts, "
        f"outbox {data.get('outbox_depth', 0)}{detail}"
    )
