"""Payload parsers shared by the sources: JSON readings, single numbers, 1-Wire files.

Each parser either returns values or raises :class:`ValueError` whose message
is a short reason (``not_number``, ``crc``, ...) that the source counts under.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Optional, Union

import orjson
from sensorcast.agent.sources.base import Reading

__all__ = [
    "W1_POWER_ON_MILLIDEGREES",
    "Rejection",
    "parse_json_reading",
    "parse_number",
    "parse_w1_slave",
]

#: What a DS18B20 reports before its first conversion (85.000 °C): never a measurement.
W1_POWER_ON_MILLIDEGREES = 85000


class Rejection(str):
    """A reject reason (the string itself, e.g. ``missing_feature``) plus a detail for logs.

    It compares equal to the bare reason, so callers can count it as a string;
    ``detail`` says which feature or value was at fault.
    """

    detail: str

    def __new__(cls, reason: str, detail: str) -> Rejection:
        self = super().__new__(cls, reason)
        self.detail = detail
        return self


def parse_json_reading(
    payload: Union[bytes, str],
    arrival_ts: float,
    indexed_features: Sequence[tuple[int, str]],
    stream_index: int,
) -> tuple[list[Reading], list[Rejection]]:
    """Parse ``{"ts": <unix s>, "<feature>": <number>, ...}`` into readings.

    ``ts`` (Unix seconds) is optional; ``arrival_ts`` (Unix seconds) is used
    when it is absent. ``indexed_features`` pairs each feature's index with the
    key it is read from. Each feature present with a number becomes a reading;
    a missing (or ``null``) or non-numeric feature is rejected and the others
    are kept. Booleans are not numbers. Keys that are not features are
    ignored. Non-finite values, values beyond float32 range (``1e300``) and
    timestamps before 2000 pass through: the window rejects them itself (reasons
    ``non_finite``, ``out_of_range``, ``too_old``), one rule for every source.

    Returns the readings and the rejections (reasons ``not_json``,
    ``not_object``, ``bad_timestamp``, ``missing_feature``, ``bad_value``).
    """
    try:
        obj = orjson.loads(payload)  # a tenth of json.loads' time; this runs per message
    except orjson.JSONDecodeError:
        # orjson is stricter than json (NaN and Infinity, integers past 64 bits, lone
        # surrogates): what json reads is still read, so the accepted inputs do not change.
        try:
            obj = json.loads(payload)
        # ValueError covers JSONDecodeError and UnicodeDecodeError; deep nesting recurses.
        except (ValueError, RecursionError):
            return [], [Rejection("not_json", "payload is not JSON")]
    if not isinstance(obj, dict):
        return [], [Rejection("not_object", "payload is not a JSON object")]
    ts = _as_float(obj.get("ts", arrival_ts))
    if ts is None or not math.isfinite(ts):
        return [], [Rejection("bad_timestamp", "ts is not a finite number of Unix seconds")]
    readings: list[Reading] = []
    rejections: list[Rejection] = []
    get = obj.get
    for index, name in indexed_features:
        value: Any = get(name)
        # The parsers make exact ints and floats (a bool is not an int here), checked inline:
        # this loop runs per reading.
        kind = type(value)
        if kind is float:
            readings.append(_reading(Reading, (stream_index, index, ts, value)))
        elif kind is int and -_BIG_INT < value < _BIG_INT:
            readings.append(_reading(Reading, (stream_index, index, ts, float(value))))
        elif value is None:
            rejections.append(Rejection("missing_feature", f"feature {name!r} is missing"))
        else:
            rejections.append(Rejection("bad_value", f"feature {name!r} is not a number"))
    return readings, rejections


def parse_number(text: Union[bytes, str]) -> float:
    """Parse one number such as ``21.4``, `` 21.4\\n`` or ``-3e-2``.

    Surrounding whitespace is ignored. ``nan``, ``inf`` and ``1e300`` come back
    as floats (the window rejects non-finite and out-of-float32-range values
    itself, after a file source's ``scale`` and ``offset``). Raises ``ValueError("empty")``
    for blank input and ``ValueError("not_number")`` for anything else.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("not_number") from None
    text = text.strip()
    if not text:
        raise ValueError("empty")
    # float() also takes "1_000"; no sensor prints that, so it is more likely garbage.
    if "_" in text:
        raise ValueError("not_number")
    try:
        return float(text)
    except ValueError:
        raise ValueError("not_number") from None


def parse_w1_slave(text: Union[bytes, str]) -> float:
    """Parse a Linux 1-Wire DS18B20 ``w1_slave`` file into degrees Celsius.

    The file holds two lines::

        72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
        72 01 4b 46 7f ff 0e 10 57 t=23125

    ``t`` is in millidegrees Celsius. Raises ``ValueError`` with reason
    ``crc`` (the first line does not end in ``YES``), ``power_on_reset`` (the
    85.000 °C the sensor holds before its first conversion), ``no_sensor``
    (all-zero scratchpad, which passes the CRC when the data line is held
    low) or ``not_w1_slave`` (anything else malformed).
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    lines = text.strip().splitlines()
    if len(lines) != 2 or "crc=" not in lines[0] or " t=" not in lines[1]:
        raise ValueError("not_w1_slave")
    if lines[0].split()[-1] != "YES":
        raise ValueError("crc")
    scratchpad, _, t = lines[1].rpartition(" t=")
    try:
        bytes.fromhex(scratchpad)
        millidegrees = int(t.strip())
    except ValueError:
        raise ValueError("not_w1_slave") from None
    if not scratchpad.replace("0", "").strip():
        raise ValueError("no_sensor")
    if millidegrees == W1_POWER_ON_MILLIDEGREES:
        raise ValueError("power_on_reset")
    return millidegrees / 1000.0


#: ``Reading``'s constructor without its generated ``__new__`` (a NamedTuple's): the same
#: tuple, in less than half the time; per reading.
_reading = tuple.__new__

#: Integers beyond this do not fit a float (``float()`` would raise OverflowError).
_BIG_INT = 2**1023


def _as_float(value: object) -> Optional[float]:
    """A JSON number as a float; None for anything else (bools, strings, huge integers)."""
    if isinstance(value, float):
        return float(value)
    if type(value) is int and -_BIG_INT < value < _BIG_INT:
        return float(value)
    return None
