"""JSON readings, one object per line, from standard input (or any stream)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any, Optional

from sensorcast.agent.errors import SourceError
from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.sources.base import ReadingSink, Source, SourceContext
from sensorcast.agent.sources.parse import parse_json_reading
from sensorcast.agent.sources.spec import SourceConfig

__all__ = ["StdinSource"]

logger = logging.getLogger(__name__)

MAX_LINE = 65536  #: Longest line accepted, bytes; longer ones are rejected.
READ_SIZE = 65536  #: Bytes asked for per read of the file descriptor.
JOIN_TIMEOUT_S = 1.0  #: How long :meth:`StdinSource.close` waits for the thread, seconds.
EXCEPTION_LOG_INTERVAL_S = 300.0  #: At most one traceback this often, seconds.


class StdinSource(Source):
    """Reads ``{"ts": <unix s>, "<feature>": <number>, ...}`` lines on a daemon thread.

    Lines are parsed like :class:`~sensorcast.agent.sources.mqtt.MqttJsonSource`
    messages (``ts`` optional: the time the line was read). Blank lines are
    skipped, lines of :data:`MAX_LINE` bytes or more are rejected (``line_too_long``).
    End of input ends the thread. ``file`` is a binary or text stream,
    ``sys.stdin`` by default.

    A stream with a file descriptor (stdin, a pipe, a file) is read with ``os.read`` after
    ``poll`` says it is readable, never through Python's buffered reader: a thread blocked
    inside ``sys.stdin.buffer`` holds its lock, and the interpreter aborts at exit
    (``Fatal Python error: _enter_buffered_busy``, a core dump) when SIGTERM stops the agent
    while the writer still holds the pipe open. :meth:`close` wakes the thread through a pipe
    of its own and joins it. A stream without a descriptor is read line by line; a blocked
    read of it cannot be interrupted, so that thread is left to the process.
    """

    type_name = "stdin"
    for_stream = True
    # One process has one stdin: a second reader would steal lines from the first.
    one_per_config = "feed other streams from mqtt, file or command"

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
        self._wake: Optional[tuple[int, int]] = None  # close() writes to [1] to end a poll
        self._log = RateLimitedLog(logger)
        self._next_traceback = 0.0

    @classmethod
    def from_config(cls, cfg: SourceConfig, ctx: SourceContext) -> StdinSource:
        """The stdin source of the stream in ``ctx`` (no keys of its own)."""
        return cls(ctx.stream, ctx.stream_name, ctx.features, ctx.sink)

    def start(self) -> None:
        """Start the reading thread."""
        if self._thread is not None:
            raise RuntimeError("source already started")
        if _fileno(self.file) is not None:
            self._wake = os.pipe()
        self._thread = threading.Thread(
            target=self._run, name=f"sensorcast-stdin-{self.stream_name}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop reading and wait (up to :data:`JOIN_TIMEOUT_S`) for the thread to end, even
        while the stream stays open. Does not close the stream itself."""
        self._closed.set()
        if self._wake is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._wake[1], b"\0")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                return  # still in the sink; the pipe stays open for it
        for fd in self._wake:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake = None

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
        fd = _fileno(self.file)
        chunks = self._fd_chunks(fd) if fd is not None else self._line_chunks()
        try:
            self._split(chunks)
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            if not self._closed.is_set():
                logger.warning("stream %s: stopped reading stdin: %s", self.stream_name, exc)
        except Exception:
            logger.exception("stream %s: stopped reading stdin", self.stream_name)

    def _fd_chunks(self, fd: int) -> Iterator[bytes]:
        """What the descriptor has, as it comes, until end of input or :meth:`close`."""
        assert self._wake is not None
        wake = self._wake[0]
        poller = select.poll()
        poller.register(fd, select.POLLIN)  # POLLHUP and POLLERR come anyway
        poller.register(wake, select.POLLIN)
        while not self._closed.is_set():
            events = poller.poll()  # no timeout: close() wakes it
            if self._closed.is_set():
                return
            if not any(f == fd for f, _ in events):
                continue
            try:
                chunk = os.read(fd, READ_SIZE)
            except BlockingIOError:  # a non-blocking descriptor another reader emptied
                continue
            yield chunk
            if not chunk:
                return

    def _line_chunks(self) -> Iterator[bytes]:
        """A stream without a descriptor: at most one line (``MAX_LINE`` long) per chunk."""
        while not self._closed.is_set():
            line = self.file.readline(MAX_LINE)
            yield line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line
            if not line:
                return

    def _split(self, chunks: Iterator[bytes]) -> None:
        """Cut chunks into lines and handle each; an empty chunk is the end of input."""
        pending = bytearray()
        skipping = False  # inside an over-long line, until its newline
        for chunk in chunks:
            if not chunk:
                if pending and not skipping:
                    self._line(bytes(pending))  # the last line, without a newline
                self.eof = True
                logger.info("stream %s: end of stdin after %d lines", self.stream_name, self.lines)
                return
            pending += chunk
            start = 0
            while True:
                end = pending.find(b"\n", start)
                if end < 0:
                    break
                if skipping:
                    skipping = False
                else:
                    self._line(bytes(pending[start:end]))
                start = end + 1
            del pending[:start]
            if len(pending) >= MAX_LINE or (skipping and pending):
                if not skipping:
                    skipping = True
                    self.lines += 1
                    self._bad("line_too_long", f"line longer than {MAX_LINE} bytes")
                pending.clear()

    def _line(self, line: bytes) -> None:
        self.lines += 1
        if len(line) >= MAX_LINE:
            self._bad("line_too_long", f"line longer than {MAX_LINE} bytes")
            return
        if not line.strip() or self._closed.is_set():
            return
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


def _fileno(file: IO[Any]) -> Optional[int]:
    """The stream's file descriptor, or None (an in-memory stream, pytest's stand-in)."""
    try:
        return file.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
