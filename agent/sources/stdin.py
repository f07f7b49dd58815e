"""JSON readings, one object per line, from standard input (or any stream)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import IO, Any, Optional

from agent.errors import SourceError
from agent.logutil import RateLimitedLog
from agent.sources.base import ReadingSink, Source
from agent.sources.parse import parse_json_reading

__all__ = ["StdinSource"]

logger = logging.getLogger(__name__)

MAX_LINE = 65536  #: Longest line accepted, bytes (or characters); longer ones are rejected.
EXCEPTION_LOG_INTERVAL_S = 300.0  #: At most one traceback this often, seconds.


class StdinSource(Source):
    """Reads ``{"ts": <unix s>, "<feature>": <number>, ...}`` lines on a daemon thread.

    Lines are parsed like :class:`~agent.sources.mqtt.MqttJsonSource`
    messages (``ts`` optional: the time the line was read). Blank lines are
    skipped, lines over :data:`MAX_LINE` are rejected (``line_too_long``).
    End of input ends the thread. ``file`` is a binary or text stream,
    ``sys.stdin`` by default.

    :meth:`close` does not close the stream (a blocked read cannot be
    interrupted portably); it stops readings from being handed on, and the
    daemon thread goes with the process.
    """

    type_name = "stdin"

    def __init__(
        self,
        stream: int,
        stream_name: str,
        features: tuple[str, ...],
        sink: ReadingSink,
        file: Optional[IO[Any]] = None,
    ) -> None:
        super().__init__(stream, stream_name, features)
        if file is None and sys.stdin is None:
            raise SourceError(f"stream {stream_name}: stdin source, but the agent has no stdin")
        self.file: IO[Any] = getattr(sys.stdin, "buffer", sys.stdin) if file is None else file
        self.lines = 0  #: Lines read, blank ones included.
        self.eof = False  #: The input has ended.
        self._sink = sink
        self._indexed = tuple(enumerate(features))
        self._closed = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._log = RateLimitedLog(logger)
        self._next_traceback = 0.0

    def start(self) -> None:
        """Start the reading thread."""
        if self._thread is not None:
            raise RuntimeError("source already started")
        self._thread = threading.Thread(
            target=self._run, name=f"sensorcast-stdin-{self.stream_name}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop handing readings on; returns at once even if the stream stays open."""
        self._closed.set()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds for the input to end; True if the thread is done."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        """The reading thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        skipping = False  # inside an over-long line, until its newline
        while not self._closed.is_set():
            try:
                line = self.file.readline(MAX_LINE)
            except (OSError, ValueError) as exc:  # ValueError: the stream was closed
                if not self._closed.is_set():
                    logger.warning("stream %s: stopped reading stdin: %s", self.stream_name, exc)
                return
            except Exception:
                logger.exception("stream %s: stopped reading stdin", self.stream_name)
                return
            if not line:
                self.eof = True
                logger.info("stream %s: end of stdin after %d lines", self.stream_name, self.lines)
                return
            complete = line.endswith(b"\n" if isinstance(line, bytes) else "\n")
            if skipping:
                skipping = not complete
                continue
            self.lines += 1
            if not complete and len(line) >= MAX_LINE:
                skipping = True
                self._bad("line_too_long", f"line longer than {MAX_LINE} characters")
                continue
            if not line.strip() or self._closed.is_set():
                continue
            try:
                self._handle(line)
            except Exception:
                self._traceback()

    def _handle(self, line: Any) -> None:
        self.messages += 1
        readings, rejections = parse_json_reading(line, time.time(), self._indexed, self.stream)
        for r in rejections:
            self._bad(r, r.detail)
        if readings:
            self._sink(readings)

    def _bad(self, reason: str, what: str) -> None:
        self.reject(reason)
        self._log.warning(
            f"{self.stream_name}:stdin:{reason}",
            "stream %s: rejected a line on stdin: %s",
            self.stream_name,
            what,
        )

    def _traceback(self) -> None:
        now = time.monotonic()
        if now < self._next_traceback:
            return
        self._next_traceback = now + EXCEPTION_LOG_INTERVAL_S
        logger.exception("stream %s: unexpected error handling a stdin line", self.stream_name)
