"""Render discovery templates as Home Assistant does, without Home Assistant: its sandboxed
Jinja environment plus the Home Assistant filters our templates use (``timestamp_utc``).
tests/homeassistant proves the same templates on the real Home Assistant 2024.3.3.

Jinja is a dev tool the arm64 suite lacks: it is imported inside :func:`environment`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Union

__all__ = ["environment", "render", "timestamp_utc"]

_MISSING = object()


def timestamp_utc(value: Any, default: Any = _MISSING) -> Any:
    """Home Assistant's ``timestamp_utc`` filter: Unix seconds as ISO-8601 UTC, or
    ``default`` when the value is no timestamp (an error without one)."""
    try:
        return datetime.fromtimestamp(value, timezone.utc).isoformat()
    except (ValueError, TypeError, OverflowError):
        if default is _MISSING:
            raise ValueError(f"timestamp_utc got invalid input {value!r}") from None
        return default


def environment() -> Any:
    """A sandboxed environment like Home Assistant's; undefined names fail loudly."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    env.filters["timestamp_utc"] = timestamp_utc
    return env


def render(template: str, payload: Union[bytes, str]) -> str:
    """``template`` rendered for one MQTT message, as ``value`` and ``value_json``."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    return str(environment().from_string(template).render(value_json=json.loads(text), value=text))
