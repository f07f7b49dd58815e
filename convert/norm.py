"""Normalization the way users trained: read ``--norm`` JSON, and ``sensorcast norm``.

STUB being extended by helper H3: ``read_norm(path, needed)`` is the contract.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from sensorcast.agent.forecast.manifest import Norm
from sensorcast.convert import ConvertError

__all__ = ["read_norm"]


def read_norm(path: Path, needed: list[str]) -> dict[str, Norm]:
    """Read ``{"<column>": {"mean": m, "std": s}}`` and check it covers ``needed``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConvertError(f"norm {path}: file not found") from exc
    except (OSError, ValueError) as exc:
        raise ConvertError(f"norm {path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConvertError(f'norm {path}: expected {{"<column>": {{"mean": m, "std": s}}}}')
    norm = {}
    for name in needed:
        entry = data.get(name)
        if not isinstance(entry, dict):
            raise ConvertError(f"norm {path}: no entry for column {name!r}")
        try:
            mean, std = float(entry["mean"]), float(entry["std"])
        except (KeyError, TypeError, ValueError):
            raise ConvertError(f"norm {path}: {name} needs numeric mean and std") from None
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ConvertError(f"norm {path}: {name} needs a finite mean and a std > 0")
        norm[name] = Norm(mean=mean, std=std)
    return norm
