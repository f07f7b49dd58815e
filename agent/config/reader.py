"""Typed getters over parsed TOML that collect every problem with its key path.

A key's default is defined once, as the default of the schema dataclass field it fills
(:class:`Section`); a getter falls back to it when the key is absent or wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, fields
from functools import cache
from pathlib import Path
from typing import Any

from sensorcast.agent.sources.spec import NO_DEFAULT

__all__ = ["MAX_SECONDS", "NAME", "NO_DEFAULT", "Reader", "Section", "field_defaults"]

#: Device ids and stream names: they go into topics.
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: Largest value of any ``*_s`` key, seconds (about 31 years): larger ones overflow timers.
MAX_SECONDS = 1e9


class Reader:
    """Reads typed values out of parsed TOML and collects every problem.

    ``base`` is the config file's folder: relative paths in the file are relative to it.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.errors: list[str] = []  #: ``<key path>: <problem>``, in the order found.

    def error(self, message: str) -> None:
        """Record one problem (its text starts with the key path)."""
        self.errors.append(message)

    def table(self, data: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        """The table under ``key`` (empty if absent or not a table)."""
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.errors.append(f"{path}: must be a table")
            return {}
        return value

    def unknown(self, data: dict[str, Any], allowed: set[str], path: str) -> None:
        """Record each key of ``data`` that is not in ``allowed``."""
        for key in data:
            if key not in allowed:
                hint = f"; allowed: {', '.join(sorted(allowed))}"
                self.errors.append(f"{join(path, key)}: unknown key{hint}")

    def get(
        self,
        data: dict[str, Any],
        key: str,
        kind: type,
        path: str,
        default: Any = None,
        required: bool = False,
    ) -> Any:
        """``data[key]`` if it is a ``kind`` (an int passes as a float), else ``default``.

        Floats must be finite, and a ``*_s`` key (seconds) at most :data:`MAX_SECONDS`.
        """
        full = join(path, key)
        if key not in data:
            if required:
                self.errors.append(f"{full}: required")
            return default
        value = data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            self.errors.append(f"{full}: must be {_kind_name(kind)}, got {_short_repr(value)}")
            return default
        if isinstance(value, float) and not math.isfinite(value):
            # TOML has nan and inf; no key means either (inf seconds overflows every timer,
            # nan compares false and silently turns a guard off).
            self.errors.append(f"{full}: must be a finite number, got {value!r}")
            return default
        if isinstance(value, float) and key.endswith("_s") and abs(value) > MAX_SECONDS:
            # Timers and waits overflow (OverflowError) past the platform's time_t.
            self.errors.append(f"{full}: must be at most {MAX_SECONDS:.0f} seconds")
            return default
        return value

    def check_topic(self, topic: str, path: str) -> None:
        """Record a topic that is empty or has a wildcard (it is published or subscribed to
        as a name)."""
        if not topic or "#" in topic or "+" in topic:
            self.errors.append(f"{path}: must be a topic name without wildcards")

    def resolve(self, text: str) -> Path:
        """A path from the config: ``~`` expanded, relative to the config file's folder."""
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base / path

    def section(self, data: dict[str, Any], path: str, schema: type, prefix: str = "") -> Section:
        """``data`` (the table at ``path``) read into ``schema``'s fields ``prefix + key``."""
        return Section(self, data, path, schema, prefix)


class Section:
    """One table read into one schema dataclass: a key's default is its field's default
    (field ``prefix + key``; None for a key that fills no field with a default)."""

    def __init__(
        self, reader: Reader, data: dict[str, Any], path: str, schema: type, prefix: str = ""
    ) -> None:
        self.reader = reader
        self.data = data
        self.path = path
        self._defaults = field_defaults(schema)
        self._prefix = prefix

    def get(
        self, key: str, kind: type, *, required: bool = False, default: Any = NO_DEFAULT
    ) -> Any:
        """``key``'s value if it is a ``kind``, else the default (the field's unless
        ``default`` is given) and a recorded problem; see :meth:`Reader.get`."""
        if default is NO_DEFAULT:
            default = self._defaults.get(self._prefix + key)
        return self.reader.get(self.data, key, kind, self.path, default, required)

    def topic(self, key: str, *, required: bool = False) -> Any:
        """A topic name without wildcards (see :meth:`Reader.check_topic`), or the default."""
        value = self.get(key, str, required=required)
        if isinstance(value, str):
            self.reader.check_topic(value, join(self.path, key))
        return value

    def resolve(self, text: str) -> Path:
        """See :meth:`Reader.resolve`."""
        return self.reader.resolve(text)

    def error(self, key: str, message: str) -> None:
        """Record a problem of ``key``: ``<path>.<key>: <message>``."""
        self.reader.error(f"{join(self.path, key)}: {message}")


@cache
def field_defaults(schema: type) -> dict[str, Any]:
    """The default of each field of dataclass ``schema`` that has one, by name."""
    out: dict[str, Any] = {}
    for f in fields(schema):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def join(path: str, key: str) -> str:
    """``path.key``, or ``key`` at the top."""
    return f"{path}.{key}" if path else key


def _short_repr(value: object) -> str:
    """``repr(value)`` cut to a readable length (a key may hold a huge or deep array)."""
    try:
        text = repr(value)
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _kind_name(kind: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }.get(kind, kind.__name__)
