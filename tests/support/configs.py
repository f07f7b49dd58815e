"""Agent configs for tests, written as TOML from Python values: a test says what it sets, one
dict per table, instead of concatenating TOML text (and quoting paths by hand).

    config = agent_config(tmp_path, device="q", port=broker.port, prefix=topic_prefix,
                          homeassistant={"enabled": False}, streams=[stdin_stream(bundle)])

The emitter (:func:`to_toml`) knows the kinds of value agent configs use: strings and paths,
booleans, integers, floats (``inf`` and ``nan`` too), arrays of those, tables and arrays of
tables, nested (``[[streams]]`` with ``[[streams.sources]]`` or ``[streams.inputs.x]``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["agent_config", "stdin_stream", "to_toml", "topic_stream"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def agent_config(
    directory: Path,
    *,
    device: Optional[str] = None,
    port: Optional[int] = None,
    prefix: Optional[str] = None,
    mqtt: Optional[Mapping[str, Any]] = None,
    streams: Sequence[Mapping[str, Any]] = (),
    name: str = "agent.toml",
    **tables: Mapping[str, Any],
) -> Path:
    """Write the agent config ``directory/name`` and return its path.

    ``device`` is ``[device] id``; ``port`` makes ``[mqtt] url`` ``mqtt://127.0.0.1:PORT``;
    ``prefix`` is ``[mqtt] topic_prefix``; ``mqtt`` adds (or overrides) ``[mqtt]`` keys;
    ``streams`` are the ``[[streams]]`` (see :func:`stdin_stream`, :func:`topic_stream`);
    every other keyword is a table of its own: ``state={"dir": ...}``, ``metrics=...``.
    """
    doc: dict[str, dict[str, Any]] = {}
    if device is not None:
        doc["device"] = {"id": device}
    link: dict[str, Any] = {}
    if port is not None:
        link["url"] = f"mqtt://127.0.0.1:{port}"
    if prefix is not None:
        link["topic_prefix"] = prefix
    link.update(mqtt or {})
    if link:
        doc["mqtt"] = link
    for table, keys in tables.items():
        doc[table] = {**doc.get(table, {}), **keys}
    path = directory / name
    path.write_text(to_toml({**doc, "streams": list(streams)} if streams else doc))
    return path


def stdin_stream(model: Union[str, Path], *, name: str = "room", **keys: Any) -> dict[str, Any]:
    """A ``[[streams]]`` entry reading JSON lines from the agent's stdin."""
    return {"name": name, "model": model, **keys, "sources": [{"type": "stdin"}]}


def topic_stream(
    model: Union[str, Path], topic: str, *, name: str = "room", **keys: Any
) -> dict[str, Any]:
    """A ``[[streams]]`` entry reading JSON readings from the MQTT topic ``topic``."""
    return {"name": name, "model": model, "input_topic": topic, **keys}


def to_toml(doc: Mapping[str, Any]) -> str:
    """``doc`` as a TOML document. Keys whose value is None are left out."""
    lines: list[str] = []
    _table(doc, (), lines)
    return "\n".join(lines) + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(map(_is_table, value))


def _table(table: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    """Emit ``table``'s keys, then its sub-tables under their headers. A table's own keys come
    first: after a header, every ``key = value`` belongs to that header's table."""
    for key, value in table.items():
        if value is not None and not _is_table(value) and not _is_table_array(value):
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        header = ".".join(_key(k) for k in (*path, key))
        if _is_table(value):
            # A table holding only tables needs no header of its own ([a.b] defines [a]).
            if not value or not all(map(_is_table, value.values())):
                lines.append(f"[{header}]")
            _table(value, (*path, key), lines)
        elif _is_table_array(value):
            for item in value:
                lines.append(f"[[{header}]]")
                _table(item, (*path, key), lines)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    # A JSON string is a TOML basic string, except that TOML wants DEL escaped too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):  # before int: a bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # 0.2, 1e+300, inf, -inf, nan: each valid TOML as it is
    if isinstance(value, (str, Path)):
        return _string(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__} {value!r}")
