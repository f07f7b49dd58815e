"""One target feature's running state in an :class:`~.anomaly.AnomalyDetector`: its CUSUM,
its runs outside the band and of equal readings, its open anomalies."""

from __future__ import annotations

import math
from typing import Any, Optional

__all__ = ["CUSUM_H", "CUSUM_K", "SIGMA_PER_MAE", "TargetState"]

#: A level shift the model half follows shows as a run of moderate residuals: a two-sided
#: CUSUM (allowance ``CUSUM_K`` sigmas, alarm at ``CUSUM_H``) raises it as a "step". On the
#: weather's Sep-Dec (bench/quality_bench.py) h=3 gave 22 clean "step" alarms in 17.5 weeks,
#: h=5 gives 6, and a step of 3 series std is still raised when its first period closes.
CUSUM_K = 1.5
CUSUM_H = 5.0
#: sigma / MAE of a normal distribution (sqrt(pi / 2)).
SIGMA_PER_MAE = math.sqrt(math.pi / 2)


class TargetState:
    """One target feature's running state (plain floats: a few targets, one row a period)."""

    def __init__(self, name: str, feature: int, mae: Optional[float]) -> None:
        self.name = name
        self.feature = feature  #: Its column in the window.
        self.prior_sigma = None if mae is None or not mae > 0 else mae * SIGMA_PER_MAE
        self.abs_sum = 0.0  # running mean absolute residual (in-band ones), the last fallback
        self.abs_n = 0
        self.out_run = 0  # consecutive periods beyond the anomaly band (signed by ``out_sign``)
        self.out_sign = 0
        self.out_since = 0.0
        self.in_run = 0  # consecutive periods back inside, while a band anomaly is open
        self.hi = self.lo = 0.0  # CUSUM of z above and below, and since when (s) each rose
        self.hi_since = self.lo_since = 0.0
        self.value = math.nan  # the last real reading's value and how many periods it held
        self.same = 0
        self.same_since = 0.0
        self.same_z = 0.0  # sum of |z| over that run
        self.resolution = math.inf  # smallest change seen between real readings
        self.pairs = self.repeats = 0  # consecutive real readings, and of those equal ones
        self.open: dict[str, dict[str, Any]] = {}  # kind -> its start payload
        self.dropout_last: Optional[int] = None  # last reading slot when a dropout opened
        self.frozen: Optional[tuple[float, float]] = None  # (sigma, centre - forecast) at the
        # start of the open band anomaly

    def cusum(self, z: float, start: float) -> Optional[float]:
        """Two-sided CUSUM of the z-scores: when either sum passes :data:`CUSUM_H`, the
        start (s) of the period it last rose from zero, else None."""
        if self.hi == 0.0:
            self.hi_since = start
        if self.lo == 0.0:
            self.lo_since = start
        self.hi = max(0.0, self.hi + z - CUSUM_K)
        self.lo = max(0.0, self.lo - z - CUSUM_K)
        if self.hi > CUSUM_H:
            return self.hi_since
        return self.lo_since if self.lo > CUSUM_H else None

    def sigma(self, min_samples: int) -> Optional[float]:
        """The fallback scale when no band came with the forecast (reading units)."""
        if self.abs_n >= min_samples and self.abs_sum > 0:
            return self.abs_sum / self.abs_n * SIGMA_PER_MAE
        return self.prior_sigma
