"""Rollout waves: which devices go first. Cohorts come from a stable hash of the device id
(sha256, sorted), so the same devices are the canaries every time and a resumed rollout picks
the same waves; each wave is a cumulative percentage of the target devices."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence

from sensorcast.agent.errors import ConfigError

__all__ = ["cohort_order", "parse_duration", "parse_share", "parse_waves", "split_waves"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_waves(text: str) -> tuple[float, ...]:
    """``1,10,50,100`` -> cumulative percentages, increasing, the last one 100."""
    try:
        waves = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--waves {text!r}: not a list of numbers; give cumulative percentages such as "
            "1,10,50,100"
        ) from None
    ok = all(0 < w <= 100 for w in waves) and all(a < b for a, b in zip(waves, waves[1:]))
    if not ok or waves[-1] != 100:
        raise ConfigError(
            f"--waves {text!r}: give increasing cumulative percentages in (0, 100] ending "
            "with 100, such as 1,10,50,100"
        )
    return waves


def parse_duration(text: str, flag: str) -> float:
    """``30s``, ``10m``, ``1h``, ``1.5`` (seconds), ``500ms``, ``2d`` -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"{flag} {text!r}: not a duration; write it as 30s, 10m, 1h or 2d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_share(text: str, flag: str) -> float:
    """``0.1`` or ``10%`` -> a share in [0, 1]."""
    raw = text.strip()
    try:
        share = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        share = math.nan
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"{flag} {text!r}: give a share between 0 and 1 (0.1) or 0-100%")
    return share


def cohort_order(devices: Iterable[str]) -> list[str]:
    """The devices in rollout order: by the sha256 of their id (then the id), a stable order
    that does not depend on their names' alphabet or on which devices exist."""
    return sorted(set(devices), key=lambda d: (hashlib.sha256(d.encode()).hexdigest(), d))


def split_waves(devices: Iterable[str], waves: Sequence[float]) -> list[list[str]]:
    """``devices`` in :func:`cohort_order`, cut into waves: wave ``k`` brings the total to
    ``waves[k]`` % of them (rounded to the nearest device), at least one more device than
    the wave before (waves that would be empty once every device has one are left out)."""
    order = cohort_order(devices)
    out: list[list[str]] = []
    done = 0
    for pct in waves:
        upto = min(len(order), max(math.floor(len(order) * pct / 100 + 0.5), done + 1))
        if upto > done:
            out.append(order[done:upto])
            done = upto
    return out
