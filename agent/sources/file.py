"""One feature read from a small text file: sysfs (hwmon, IIO, thermal), 1-Wire, any file."""

from __future__ import annotations

import glob
import os
import time
from typing import Callable, Union

from agent.errors import ConfigError, SourceError
from agent.sources.base import Reading, ReadingSink
from agent.sources.parse import parse_number, parse_w1_slave
from agent.sources.poll import DEFAULT_INTERVAL_S, DEFAULT_MAX_BACKOFF_S, PolledSource

__all__ = ["PARSERS", "FileSource"]

#: How a file's text becomes one value, by the ``parser`` config key.
PARSERS: dict[str, Callable[[bytes], float]] = {
    "number": parse_number,
    "w1_slave": parse_w1_slave,
}

MAX_BYTES = 65536  #: More than any sensor file holds; guards against a wrong path.


class FileSource(PolledSource):
    """Reads one feature from a file every ``interval_s`` seconds.

    The file is opened, read and closed each time (sysfs attributes are only
    refreshed by a new read). The value is ``parsed * scale + offset``
    (e.g. ``scale = 0.001`` for millidegrees), timestamped with the time the
    read returned. A missing or unreadable file is a failure, retried with
    backoff: the sensor may come back (a USB sensor replugged).

    ``path`` may be a glob pattern (``/sys/class/hwmon/hwmon*/temp1_input``),
    since sysfs numbering can change between boots; it is resolved on every
    read and must match exactly one file.
    """

    type_name = "file"

    def __init__(
        self,
        stream: int,
        stream_name: str,
        features: tuple[str, ...],
        feature_index: int,
        path: Union[str, os.PathLike[str]],
        sink: ReadingSink,
        interval_s: float = DEFAULT_INTERVAL_S,
        parser: str = "number",
        scale: float = 1.0,
        offset: float = 0.0,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
    ) -> None:
        super().__init__(stream, stream_name, features, sink, interval_s, max_backoff_s)
        if not 0 <= feature_index < len(features):
            raise ConfigError(f"stream {stream_name}: feature index {feature_index} out of range")
        if parser not in PARSERS:
            raise ConfigError(
                f"stream {stream_name}: unknown file parser {parser!r}; "
                f"use one of {', '.join(sorted(PARSERS))}"
            )
        self.feature_index = feature_index
        self.path = os.fspath(path)
        self.parser = parser
        self.scale = scale
        self.offset = offset
        self._parse = PARSERS[parser]
        self._is_pattern = glob.has_magic(self.path)

    def describe(self) -> str:
        """The file's path, for log lines."""
        return self.path

    def read_once(self, now: float) -> list[Reading]:
        """Read and parse the file; ``now`` (Unix s) is unused: the read is timestamped."""
        with open(self._resolve(), "rb", buffering=0) as f:
            data = f.read(MAX_BYTES)
        ts = time.time()
        value = self._parse(data) * self.scale + self.offset
        return [Reading(self.stream, self.feature_index, ts, value)]

    def _resolve(self) -> str:
        if not self._is_pattern:
            return self.path
        matches = sorted(glob.glob(self.path))
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise SourceError(f"no file matches {self.path}")
        raise SourceError(
            f"{len(matches)} files match {self.path} ({', '.join(matches[:3])}"
            f"{', ...' if len(matches) > 3 else ''}); make the pattern match one"
        )
