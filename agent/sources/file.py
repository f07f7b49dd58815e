"""One feature read from a small text file: sysfs (hwmon, IIO, thermal), 1-Wire, any file."""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path
from typing import Callable, Union

from sensorcast.agent.errors import ConfigError, SourceError
from sensorcast.agent.sources.base import Reading, ReadingSink, SourceContext
from sensorcast.agent.sources.parse import parse_number, parse_w1_slave
from sensorcast.agent.sources.poll import DEFAULT_INTERVAL_S, DEFAULT_MAX_BACKOFF_S, PolledSource
from sensorcast.agent.sources.spec import SourceConfig, SourceTable

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
    config_keys = frozenset({"path", "parser", "scale", "offset", "interval_s", "max_backoff_s"})
    for_feature = True

    def __init__(
        self,
        stream: int,
        stream_name: str,
        features: tuple[str, ...],
        feature_index: int,
        path: Union[str, os.PathLike[str]],
        sink: ReadingSink,
        interval_s: float = DEFAULT_INTERVAL_S,
        parser: str = SourceConfig.parser,
        scale: float = SourceConfig.scale,
        offset: float = SourceConfig.offset,
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

    @classmethod
    def parse_config(cls, table: SourceTable) -> SourceConfig:
        """``path`` (required; a glob must match a file now), ``parser``, ``scale``,
        ``offset``, ``interval_s``, ``max_backoff_s``."""
        text = table.get("path", str, required=True)
        path = None
        if text is not None:
            path = table.resolve(text)
            matches = glob.glob(str(path)) if glob.has_magic(str(path)) else [str(path)]
            if not any(Path(m).is_file() for m in matches):
                table.error("path", f"file not found: {path}")
        parser = table.get("parser", str)
        if parser not in PARSERS:
            table.error("parser", f"must be {' or '.join(repr(p) for p in PARSERS)}")
        return SourceConfig(
            type=cls.type_name,
            where=table.where,
            feature=table.feature,
            path=path,
            parser=parser,
            scale=table.get("scale", float),
            offset=table.get("offset", float),
            **cls.parse_timing(table),
        )

    @classmethod
    def from_config(cls, cfg: SourceConfig, ctx: SourceContext) -> FileSource:
        """A file source for ``cfg.feature`` of the stream in ``ctx``."""
        feature = ctx.feature_index(cfg)
        assert cfg.path is not None and feature is not None  # parse_config made sure
        return cls(
            ctx.stream, ctx.stream_name, ctx.features, feature, cfg.path, ctx.sink,
            interval_s=cfg.interval_s, parser=cfg.parser, scale=cfg.scale, offset=cfg.offset,
            max_backoff_s=cfg.max_backoff_s,
        )  # fmt: skip

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
