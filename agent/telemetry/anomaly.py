"""Anomalies from forecasts: actuals the forecast's band cannot explain (stub: issue 16)."""

from __future__ import annotations

__all__ = ["AnomalyDetector"]


class AnomalyDetector:
    """One stream's anomaly state (see the issue-16 contract); main loop only."""
