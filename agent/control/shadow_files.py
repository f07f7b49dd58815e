"""Where a stream's shadow bundle lives and whether it may stand in for the live model: the
rules model updates (``"shadow": true``), promotion and the agent's shadow runner share.

Kept apart from :mod:`sensorcast.agent.shadow` (which tracks quality) so that ``control``
imports nothing of ``telemetry``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from sensorcast.agent.config import StreamConfig
from sensorcast.agent.forecast.manifest import Bundle, Manifest

__all__ = ["live_label", "misfit", "shadow_path"]


def shadow_path(sc: StreamConfig) -> Path:
    """Where the stream's shadow bundle is: ``shadow_model``, else ``<model>.shadow``."""
    return sc.shadow_model or sc.model.with_name(sc.model.name + ".shadow")


def live_label(sc: StreamConfig, bundle: Bundle) -> str:
    """The label ``bundle`` will carry once promoted: ``<model stem>@sha256-prefix``."""
    return f"{sc.model.stem}@{bundle.sha256[:12]}"


def misfit(live: Manifest, shadow: Manifest) -> Optional[str]:
    """Why a shadow cannot run on the live model's windows or be compared with it (features,
    targets, window, period, computed time features), or None if it fits."""
    for what in ("features", "targets", "window", "period_s", "computed"):
        mine, theirs = getattr(shadow, what), getattr(live, what)
        if mine != theirs:
            return f"its {what} {mine!r} differ from the live model's {theirs!r}"
    return None
