"""Sources read on a schedule by their own thread: files, commands."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from typing import Any, ClassVar, Optional

from sensorcast.agent.errors import ConfigError, SourceError
from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.sources.base import Reading, ReadingSink, Source
from sensorcast.agent.sources.spec import SourceConfig, SourceTable

__all__ = ["DEFAULT_INTERVAL_S", "DEFAULT_MAX_BACKOFF_S", "PolledSource"]

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S: float = SourceConfig.interval_s  #: Seconds between reads.
#: Longest wait between retries of a failing source, seconds.
DEFAULT_MAX_BACKOFF_S: float = SourceConfig.max_backoff_s
JOIN_TIMEOUT_S = 2.0  #: How long :meth:`PolledSource.close` waits for the thread, seconds.
FAILURE_LOG_INTERVAL_S = 300.0  #: At most one failure line per source this often, seconds.
EXCEPTION_LOG_INTERVAL_S = 300.0  #: At most one traceback per source this often, seconds.

#: What a read may raise when the sensor is away (a failure, retried with backoff).
FAILURES = (SourceError, OSError, subprocess.TimeoutExpired)


class PolledSource(Source):
    """Calls :meth:`read_once` every ``interval_s`` seconds on a daemon thread.

    Non-empty results go to the sink. A read raising :class:`SourceError`,
    :class:`OSError` or :class:`subprocess.TimeoutExpired` is a *failure*: the
    source is marked ``failing`` and retried after ``interval_s`` * 2, * 4, ...
    up to ``max_backoff_s`` (never sooner than ``interval_s``). A
    :class:`ValueError` is a *bad reading*: counted under its message as the
    reason, not a failure. No exception ends the thread; only :meth:`close`.

    The schedule is on the monotonic clock and keeps its phase: a slow read
    does not shift the next ones, and missed slots are skipped, not caught up.
    """

    type_name = "polled"
    #: Its config keys that are durations, each checked to be > 0 seconds, in this order.
    timing_keys: ClassVar[tuple[str, ...]] = ("interval_s", "max_backoff_s")

    def __init__(
        self,
        stream: int,
        stream_name: str,
        features: tuple[str, ...],
        sink: ReadingSink,
        interval_s: float = DEFAULT_INTERVAL_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
    ) -> None:
        super().__init__(stream, stream_name, features)
        if not interval_s > 0:
            raise ConfigError(f"stream {stream_name}: interval_s must be > 0, not {interval_s}")
        if not max_backoff_s > 0:
            raise ConfigError(
                f"stream {stream_name}: max_backoff_s must be > 0, not {max_backoff_s}"
            )
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.failing = False  #: The last read failed.
        self.last_error: Optional[str] = None  #: Why the last failed read failed.
        self.failures = 0  #: Failed reads since start.
        self._sink = sink
        self._consecutive = 0
        self._failing_since = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._log = RateLimitedLog(logger)
        self._failure_log = RateLimitedLog(logger, FAILURE_LOG_INTERVAL_S)
        self._next_traceback = 0.0

    @classmethod
    def parse_timing(cls, table: SourceTable) -> dict[str, Any]:
        """The :attr:`timing_keys` read from ``table``: seconds (floats), by key."""
        values = {key: table.get(key, float) for key in cls.timing_keys}
        for key in cls.timing_keys:
            if not values[key] > 0:
                table.error(key, "must be > 0 seconds")
        return values

    def describe(self) -> str:
        """What is read, for log lines (a path, a command)."""
        return self.type_name

    def read_once(self, now: float) -> list[Reading]:
        """Read the sensor once; ``now`` is the Unix time the read started, seconds.

        Raise a :data:`FAILURES` exception when the sensor cannot be reached
        and :class:`ValueError` (message: a short reason) for a bad value.
        """
        raise NotImplementedError

    def start(self) -> None:
        """Start the polling thread; the first read happens at once."""
        if self._thread is not None:
            raise RuntimeError("source already started")
        self._thread = threading.Thread(
            target=self._run,
            name=f"sensorcast-{self.type_name}-{self.stream_name}",
            daemon=True,
        )
        logger.debug(
            "stream %s: %s source: reading %s every %g s",
            self.stream_name,
            self.type_name,
            self.describe(),
            self.interval_s,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop polling and wait (briefly) for the thread to finish."""
        self._stop.set()
        self._interrupt()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                logger.warning(
                    "stream %s: %s source did not stop within %.1f s",
                    self.stream_name,
                    self.describe(),
                    JOIN_TIMEOUT_S,
                )

    @property
    def running(self) -> bool:
        """The polling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _interrupt(self) -> None:
        """Abort a read in progress, for a prompt :meth:`close` (called from another thread)."""

    def _run(self) -> None:
        next_due = time.monotonic()
        while not self._stop.is_set():
            try:
                delay = self._poll_once()
            except Exception:  # e.g. from the sink; the thread must live on
                self._traceback()
                delay = None
            if delay is None:
                # Keep the phase: the next slot on the grid that is still ahead.
                next_due += self.interval_s
                now = time.monotonic()
                if next_due <= now:
                    next_due += ((now - next_due) // self.interval_s + 1) * self.interval_s
            else:
                next_due = time.monotonic() + delay
            self._stop.wait(max(0.0, next_due - time.monotonic()))

    def _poll_once(self) -> Optional[float]:
        """One read; returns a backoff delay in seconds after a failure, else None."""
        try:
            readings = self.read_once(time.time())
        except FAILURES as exc:
            return self._failed(_describe_error(exc))
        except ValueError as exc:
            self._recovered()
            self.messages += 1
            reason = str(exc) or "bad_value"
            self._bad(reason, reason)
            return None
        except Exception as exc:
            if self._stop.is_set():  # close() aborted the read
                return None
            self._traceback()
            return self._failed(f"unexpected {type(exc).__name__}: {exc}", logged=True)
        self._recovered()
        self.messages += 1
        if readings:
            self._sink(readings)
        return None

    def _bad(self, reason: str, detail: str) -> None:
        """Count a bad reading under ``reason`` and log ``detail`` (rate-limited)."""
        self.reject(reason)
        self._log.warning(
            f"{self.stream_name}:{self.describe()}:{reason}",
            "stream %s: rejected a reading from %s: %s",
            self.stream_name,
            self.describe(),
            detail,
        )

    def _failed(self, error: str, logged: bool = False) -> Optional[float]:
        if self._stop.is_set():  # close() aborted the read: not the sensor's fault
            return None
        if not self.failing:
            self._failing_since = time.monotonic()
        self.failing = True
        self.last_error = error
        self.failures += 1
        self._consecutive += 1
        backoff = min(self.interval_s * 2.0 ** min(self._consecutive, 32), self.max_backoff_s)
        backoff = max(backoff, self.interval_s)
        if not logged:
            self._failure_log.warning(
                f"{self.stream_name}:{self.describe()}:failure",
                "stream %s: reading %s failed (%s); retrying in %.1f s",
                self.stream_name,
                self.describe(),
                error,
                backoff,
            )
        return backoff

    def _recovered(self) -> None:
        if not self.failing:
            return
        logger.info(
            "stream %s: %s works again after %d failed reads in %.0f s",
            self.stream_name,
            self.describe(),
            self._consecutive,
            time.monotonic() - self._failing_since,
        )
        self.failing = False
        self._consecutive = 0

    def _traceback(self) -> None:
        now = time.monotonic()
        if now < self._next_traceback:
            return
        self._next_traceback = now + EXCEPTION_LOG_INTERVAL_S
        logger.exception(
            "stream %s: unexpected error reading %s (next traceback in %.0f s at the earliest)",
            self.stream_name,
            self.describe(),
            EXCEPTION_LOG_INTERVAL_S,
        )


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"timed out after {exc.timeout:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__
