"""Anomalies from forecasts: actuals the forecast's band cannot explain (stub: issue 16)."""

from __future__ import annotations

from typing import Optional

from sensorcast.agent.config import QualityConfig, StreamConfig
from sensorcast.agent.forecast.manifest import Manifest

__all__ = ["AnomalyDetector"]


class AnomalyDetector:
    """One stream's anomaly state (see the issue-16 contract); main loop only."""

    @classmethod
    def for_stream(
        cls, q: QualityConfig, sc: StreamConfig, m: Manifest
    ) -> Optional[AnomalyDetector]:
        """The stream's detector, or None (``quality.anomaly`` off, or no target is among the
        features, so no actual is ever seen)."""
        return None
