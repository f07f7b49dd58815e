"""``[[streams]]``: each stream's model and inputs.

A source table (``[streams.inputs.<feature>]``, ``[[streams.sources]]``) is validated by
the source class its ``type`` names, looked up in
:data:`~sensorcast.agent.sources.registry.SOURCE_TYPES`: the class declares its keys and
where it may be used, and checks its own values (:meth:`Source.parse_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sensorcast.agent.config.files import not_a_file
from sensorcast.agent.config.reader import NAME, Reader, Section
from sensorcast.agent.config.schema import StreamConfig
from sensorcast.agent.sources.spec import SourceConfig

if TYPE_CHECKING:
    from sensorcast.agent.sources.base import Source

__all__ = ["STREAM_KEYS", "SourceSection", "parse_streams"]

#: Keys a ``[[streams]]`` table takes.
STREAM_KEYS = frozenset({
    "name", "model", "input_topic", "inputs", "sources", "features", "resample", "max_gap_s",
    "close_delay_s", "max_future_s", "retain", "rollout_steps", "units", "level", "fallback",
    "fallback_after_s", "shadow_model", "auto_promote", "promote_margin", "promote_after_s",
})  # fmt: skip
#: What ``fallback`` may name: the naive forecasts the agent can publish instead.
FALLBACKS = ("last_value",)


class SourceSection(Section):
    """One source's table, read for its type's
    :meth:`~sensorcast.agent.sources.base.Source.parse_config` (a
    :class:`~sensorcast.agent.sources.spec.SourceTable`)."""

    def __init__(
        self, reader: Reader, data: dict[str, Any], where: str, feature: Optional[str]
    ) -> None:
        super().__init__(reader, data, where, SourceConfig)
        self._feature = feature

    @property
    def where(self) -> str:
        """The table's key path."""
        return self.path

    @property
    def feature(self) -> Optional[str]:
        """The feature it feeds, None for a whole-stream source."""
        return self._feature


def parse_streams(r: Reader, data: dict[str, Any]) -> list[StreamConfig]:
    """Every ``[[streams]]`` table; names unique, and the rules that span streams."""
    streams_raw = data.get("streams", [])
    streams: list[StreamConfig] = []
    if not isinstance(streams_raw, list) or not streams_raw:
        r.error("streams: add at least one [[streams]] table")
        streams_raw = []
    names: set[str] = set()
    first: dict[str, str] = {}  # source type -> where its one source is
    for i, raw in enumerate(streams_raw):
        where = f"streams[{i}]"
        if not isinstance(raw, dict):
            r.error(f"{where}: must be a table")
            continue
        stream = _parse_stream(r, raw, where)
        if stream is None:
            continue
        if stream.name in names:
            r.error(f"{where}.name: duplicate stream name {stream.name!r}")
        names.add(stream.name)
        streams.append(stream)
        _check_one_per_config(r, stream, first)
    return streams


def _parse_stream(r: Reader, raw: dict[str, Any], where: str) -> Optional[StreamConfig]:
    r.unknown(raw, set(STREAM_KEYS), where)
    before = len(r.errors)
    s = r.section(raw, where, StreamConfig)
    name = s.get("name", str, required=True)
    if isinstance(name, str) and not NAME.match(name):
        s.error("name", "use 1-64 letters, digits, '_' or '-'")
    model = _model_path(s)
    topic = s.topic("input_topic")
    sources = _parse_sources(r, raw, where)
    if topic is None and not sources:
        r.error(
            f"{where}: no input; set input_topic, or add [streams.inputs.<feature>] "
            "or [[streams.sources]] tables"
        )
    retain = s.get("retain", bool)
    rollout = s.get("rollout_steps", int)
    if rollout is not None and not 1 <= rollout <= 10_000:
        s.error("rollout_steps", "must be between 1 and 10000")
    features = _features(s)
    units = dict(s.get("units", dict))  # the default, (), is no units
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in units.items()):
        s.error("units", "must map target names to unit strings")
        units = {}
    resample = s.get("resample", str)
    if resample not in ("mean", "last"):
        s.error("resample", "must be 'mean' or 'last'")
    seconds = {key: _seconds(s, key) for key in ("max_gap_s", "close_delay_s", "max_future_s")}
    trust = _trust(s)
    if len(r.errors) > before or model is None:
        return None
    return StreamConfig(
        name=name,
        model=model,
        input_topic=topic,
        features=features,
        resample=resample,
        sources=tuple(sources),
        retain=retain,
        rollout_steps=rollout,
        units=tuple(sorted(units.items())),
        max_gap_s=seconds["max_gap_s"],
        close_delay_s=seconds["close_delay_s"],
        max_future_s=seconds["max_future_s"],
        **trust,
    )


def _trust(s: Section) -> dict[str, Any]:
    """The interval's level, the fallback, the shadow model and its promotion."""
    level = s.get("level", float)
    if not 0.5 <= level <= 0.98:
        s.error("level", "must be between 0.5 and 0.98 (0.8: an 80 % interval)")
    fallback = s.get("fallback", str)
    if fallback is not None and fallback not in FALLBACKS:
        s.error("fallback", f"must be {' or '.join(map(repr, FALLBACKS))}, or left out for none")
    shadow: Optional[Path] = None
    shadow_text = s.get("shadow_model", str)
    if isinstance(shadow_text, str):
        shadow = s.resolve(shadow_text)
        problem = not_a_file(shadow)
        if problem:
            s.error("shadow_model", problem)
    margin = s.get("promote_margin", float)
    if not 0 <= margin < 1:
        s.error("promote_margin", "must be >= 0 and < 1 (0.1: 10 % lower error)")
    out: dict[str, Any] = {
        "level": level,
        "fallback": fallback,
        "shadow_model": shadow,
        "auto_promote": s.get("auto_promote", bool),
        "promote_margin": margin,
    }
    for key in ("fallback_after_s", "promote_after_s"):
        out[key] = s.get(key, float)
        if out[key] < 0:
            s.error(key, "must be >= 0 seconds")
    return out


def _model_path(s: Section) -> Optional[Path]:
    """``model``: the bundle, a regular file."""
    model = s.get("model", str, required=True)
    if not isinstance(model, str):
        return None
    path = s.resolve(model)
    problem = not_a_file(path)
    if problem:
        s.error("model", problem)
    return path


def _features(s: Section) -> Optional[tuple[str, ...]]:
    features = s.get("features", list)
    if features is not None and (
        not features or not all(isinstance(f, str) and f for f in features)
    ):
        s.error("features", "must be a non-empty list of feature names")
        return None
    return None if features is None else tuple(features)


def _seconds(s: Section, key: str) -> Optional[float]:
    value: Optional[float] = s.get(key, float)
    if value is not None and value < 0:
        s.error(key, "must be >= 0 seconds")
    return value


def _parse_sources(r: Reader, raw: dict[str, Any], where: str) -> list[SourceConfig]:
    """``[streams.inputs.<feature>]`` tables, then ``[[streams.sources]]``."""
    inputs = r.table(raw, "inputs", f"{where}.inputs")
    out = _parse_tables(r, [(f"{where}.inputs.{f}", t, f) for f, t in inputs.items()])
    listed = raw.get("sources", [])
    if not isinstance(listed, list):
        r.error(f"{where}.sources: must be an array of tables ([[streams.sources]])")
        listed = []
    out += _parse_tables(r, [(f"{where}.sources[{i}]", t, None) for i, t in enumerate(listed)])
    return out


def _parse_tables(r: Reader, tables: list[tuple[str, Any, Optional[str]]]) -> list[SourceConfig]:
    """Each (key path, table, feature or None) that is a valid source table."""
    out: list[SourceConfig] = []
    for where, table, feature in tables:
        if not isinstance(table, dict):
            r.error(f"{where}: must be a table")
            continue
        parsed = _parse_source(r, table, where, feature)
        if parsed is not None:
            out.append(parsed)
    return out


def _parse_source(
    r: Reader, raw: dict[str, Any], where: str, feature: Optional[str]
) -> Optional[SourceConfig]:
    """One source table, validated by the class its ``type`` names."""
    before = len(r.errors)
    kind = r.get(raw, "type", str, where, required=True)
    if kind is None:
        return None
    types = _source_types(feature is not None)
    cls = types.get(kind)
    if cls is None:
        r.error(f"{where}.type: must be one of {', '.join(types)}, not {kind!r}")
        return None
    r.unknown(raw, {"type", *cls.config_keys}, where)
    parsed = cls.parse_config(SourceSection(r, raw, where, feature))
    return parsed if len(r.errors) == before else None


def _check_one_per_config(r: Reader, stream: StreamConfig, first: dict[str, str]) -> None:
    """A source type that can exist once per process (stdin: one process has one stdin);
    ``first`` maps such a type to where its source is, across streams."""
    for src in stream.sources:
        instead = _source_types(None)[src.type].one_per_config
        if instead is None:
            continue
        if src.type in first:
            r.error(
                f"{src.where}.type: only one {src.type} source in the whole config "
                f"(already {first[src.type]}); {instead}"
            )
        else:
            first[src.type] = src.where


def _source_types(per_feature: Optional[bool]) -> Mapping[str, type[Source]]:
    """The registry's source types: usable per feature, per stream, or all (None).

    Imported here, not at the top: the source classes (threads, subprocesses, the JSON
    parser) load only when a config names a source, so ``sensorcast health`` stays quick.
    """
    from sensorcast.agent.sources.registry import SOURCE_TYPES, source_types

    return SOURCE_TYPES if per_feature is None else source_types(per_feature)
