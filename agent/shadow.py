"""Shadow models: a second bundle run on a stream's windows, tracked on the same actuals as
the live model, never published as the stream's forecast.

A stream's shadow is its ``shadow_model`` file, else ``<model>.shadow`` when that file
exists, where a ``"shadow": true`` model update installs it
(:func:`~sensorcast.agent.control.shadow_files.shadow_path`). The pipeline calls
:meth:`Shadow.step` after each live forecast; the reloader loads, reloads and drops the
shadow as its file appears, changes and goes, and judges automatic promotion
(:meth:`Shadow.judge`) from its periodic job, off the hot path.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import numpy as np
from sensorcast.agent.config import QualityConfig, StreamConfig
from sensorcast.agent.control.shadow_files import live_label
from sensorcast.agent.forecast.manifest import Bundle, Manifest
from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.telemetry.quality import QualityTracker

__all__ = ["Shadow", "tracker_for"]

logger = logging.getLogger(__name__)

#: A model as a function: window ``(window, features)`` -> ``(steps, targets)``.
Predict = Callable[[np.ndarray], np.ndarray]


def tracker_for(q: QualityConfig, sc: StreamConfig, m: Manifest) -> Optional[QualityTracker]:
    """A quality tracker for a shadow bundle, made as the stream makes its own."""
    return QualityTracker.for_stream(q, sc, m)


class Shadow:
    """A stream's shadow bundle; main loop only.

    ``live()`` returns the live model's tracker now (it is replaced on a model swap), for the
    comparison; ``min_samples``: residuals per step both need before they are compared.
    """

    def __init__(
        self,
        sc: StreamConfig,
        bundle: Bundle,
        predict: Predict,
        quality: Optional[QualityTracker],
        live: Callable[[], Optional[QualityTracker]],
        min_samples: int = 20,
    ) -> None:
        self.cfg = sc
        self.bundle = bundle
        self.label = live_label(sc, bundle)  #: As it will be labelled once promoted.
        self.predict = predict
        self.quality = quality
        self._live = live
        self.min_samples = min_samples
        self.forecasts = 0  #: Windows forecast.
        self.errors = 0  #: Windows whose forecast raised (each lost, never fatal).
        self.data_time: Optional[float] = None  #: Window end of its latest step (Unix s).
        #: Since when (data time, Unix s) its MAE stayed below (1 - margin) x the live one's.
        self.better_since: Optional[float] = None
        self._log = RateLimitedLog(logger, 60.0)

    def step(self, slot: int, window: np.ndarray) -> None:
        """After the live forecast of ``window`` (``(window, features)``, newest closed
        period ``slot``): score the shadow's earlier forecasts, forecast this window.
        Never raises."""
        try:
            tracker = self.quality
            if tracker is not None:
                tracker.actual(slot, window[-1])
            values = self.predict(window)
            if tracker is not None:
                tracker.band(values)  # keeps its interval adapting, as the live one's does
                tracker.forecast(slot, values, False, window)
            self.forecasts += 1
            self.data_time = slot * self.bundle.manifest.period_s  # the window_end
        except Exception as exc:  # a broken shadow must never cost the live forecast
            self.errors += 1
            self._log.warning(
                f"{self.cfg.name}:shadow", "stream %s: shadow model %s failed: %s: %s",
                self.cfg.name, self.label, type(exc).__name__, " ".join(str(exc).split()),
            )  # fmt: skip

    def maes(self) -> Optional[tuple[float, float]]:
        """(shadow, live) rolling MAE over all steps and targets both forecast, on the same
        actuals: the live model's over its newest residuals, as many per step as the shadow
        has (it started later); None until the shadow has ``min_samples`` on every step."""
        live, mine = self._live(), self.quality
        if live is None or mine is None:
            return None
        steps = min(live.horizon, mine.horizon)
        mine_mae = mine.mae()[:steps]  # (refreshes its scores, counts too)
        counts = mine.scores.counts[:steps]
        if int(counts.min()) < self.min_samples:
            return None
        live.mae()  # refreshes the live tracker's ring to the same actuals
        live_mae_table = live.scores.recent_mae(counts.min(axis=1))[:steps]
        shadow_mae, live_mae = float(np.mean(mine_mae)), float(np.nanmean(live_mae_table))
        if not (np.isfinite(shadow_mae) and np.isfinite(live_mae)):
            return None
        return shadow_mae, live_mae

    def judge(self, margin: float, after_s: float) -> bool:
        """Whether the shadow has now beaten the live model by ``margin`` (its MAE below
        ``(1 - margin)`` x the live one's) for ``after_s`` seconds of data time."""
        maes, now = self.maes(), self.data_time
        if maes is None or now is None or not maes[0] < (1.0 - margin) * maes[1]:
            self.better_since = None
            return False
        if self.better_since is None:
            self.better_since = now
        return now - self.better_since >= after_s

    def report(self) -> dict[str, Any]:
        """What the quality message carries under ``"shadow"``: the shadow's own quality
        report (its rolling error, skill, coverage), its counts, and how it compares with
        the live model (``mae_ratio``: shadow MAE / live MAE over all steps, None until both
        have ``min_samples`` residuals per step)."""
        body: dict[str, Any] = {"model": self.label, "forecasts": self.forecasts}
        if self.quality is not None:
            own = self.quality.report(self.cfg.name, self.label, time.time())
            body.update({k: v for k, v in own.items() if k not in ("stream", "time")})
        maes = self.maes()
        body.update(
            {
                "forecasts": self.forecasts,
                "errors": self.errors,
                "mae": None if maes is None else round(maes[0], 6),
                "live_mae": None if maes is None else round(maes[1], 6),
                "mae_ratio": None if maes is None or maes[1] <= 0 else round(maes[0] / maes[1], 4),
                "better_since": self.better_since,
            }
        )
        return body
