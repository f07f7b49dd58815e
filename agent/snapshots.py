"""The warm-restart store: every stream's window, saved as JSON in the state directory.

Saved every :data:`SNAPSHOT_S` and at shutdown, read back at start, so a restart (an
upgrade, a crash) need not wait a whole window before the next forecast. A snapshot is
used only for the same model and while it is younger than the stream's ``max_gap_s``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.streams import Stream

__all__ = ["SNAPSHOT_S", "WindowStore"]

logger = logging.getLogger(__name__)

SNAPSHOT_S = 60.0  #: How often windows are snapshotted for a warm restart, seconds.


class WindowStore:
    """Windows of ``streams`` saved to and restored from ``path`` (written atomically)."""

    def __init__(self, path: Path, streams: Sequence[Stream]) -> None:
        self.path = path
        self.streams = streams
        self._log = RateLimitedLog(logger)

    def restore(self) -> None:
        """Warm restart: reload the windows saved at the last shutdown (or snapshot)."""
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.warning("window snapshot %s ignored: unreadable (%s)", self.path, exc)
            return
        now = time.time()
        entries = saved.get("streams", {}) if isinstance(saved, dict) else {}
        for stream in self.streams:
            entry = entries.get(stream.name)
            if isinstance(entry, dict):
                self._restore(stream, entry, now)

    def _restore(self, stream: Stream, entry: dict[str, Any], now: float) -> None:
        name = stream.name
        if entry.get("model") != stream.bundle.sha256:
            logger.info("stream %s: window snapshot ignored: it is from another model", name)
            return
        age = now - float(entry.get("saved_at", 0))
        if not 0 <= age <= stream.window.max_gap_s:
            logger.info(
                "stream %s: window snapshot ignored: %.0f s old, more than max_gap_s", name, age
            )
            return
        try:
            stream.window.restore(entry["window"])
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("stream %s: window snapshot ignored: %s", name, exc)
            return
        logger.info(
            "stream %s: warm restart with %d of %d rows",
            name,
            stream.window.filled,
            stream.window.length,
        )

    def save(self) -> None:
        """Snapshot every window to the state directory (atomically); a failure is logged,
        rate-limited, and the next snapshot tries again."""
        data = {
            "saved_at": time.time(),
            "streams": {
                s.name: {
                    "model": s.bundle.sha256,
                    "saved_at": time.time(),
                    "window": s.window.snapshot(),
                }
                for s in self.streams
            },
        }
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError as exc:
            self._log.warning("snapshot", "cannot save window snapshot: %s", exc)
