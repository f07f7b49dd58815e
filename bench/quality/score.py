"""The figures, from the payloads the agent published and the data it was fed."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from bench.quality.faults import Fault

__all__ = ["Truth", "alarms", "coverage_skill", "delays", "residual_sigma"]

WEEK_S = 7 * 86400.0
#: A fault counts as detected by an anomaly that starts within its periods plus this many.
GRACE_PERIODS = 12


class Truth:
    """The clean target series on a regular grid: what happened at any time (NaN: no row)."""

    def __init__(self, ts: np.ndarray, y: np.ndarray, period_s: float) -> None:
        self.t0, self.period_s, self.y = float(ts[0]), period_s, y

    def at(self, times: np.ndarray) -> np.ndarray:
        """The target at each of ``times`` (Unix s), NaN outside the data."""
        idx = np.rint((times - self.t0) / self.period_s).astype(np.int64)
        ok = (idx >= 0) & (idx < len(self.y))
        out = np.full(times.shape, np.nan)
        out[ok] = self.y[idx[ok]]
        return out


def _stack(forecasts: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Step-by-step arrays (n, horizon) of the single-target forecasts that carry a band."""
    banded = [f for f in forecasts if f["lower"] is not None]
    return {
        "end": np.array([f["window_end"] for f in banded]),
        "steps": np.array([f["steps"] for f in banded]),
        "values": np.array([[v[0] for v in f["values"]] for f in banded], dtype=float),
        "lower": np.array([[v[0] for v in f["lower"]] for f in banded], dtype=float),
        "upper": np.array([[v[0] for v in f["upper"]] for f in banded], dtype=float),
    }


def coverage_skill(
    forecasts: list[dict[str, Any]], truth: Truth, season_s: float = 86400.0
) -> dict[str, Any]:
    """Empirical coverage of the published band per step, the model's MAE and its skill
    (1 - MAE_model / MAE_baseline) per step against the last value carried forward and the
    value one season earlier, over every banded forecast whose actuals are in the data."""
    s = _stack(forecasts)
    actual = truth.at(s["steps"])
    last = truth.at(s["end"])[:, None] * np.ones_like(actual)
    seasonal = truth.at(s["steps"] - season_s)
    ok = np.isfinite(actual).all(axis=1) & np.isfinite(last[:, 0])
    ok &= np.isfinite(seasonal).all(axis=1)
    actual, values = actual[ok], s["values"][ok]
    inside = (actual >= s["lower"][ok]) & (actual <= s["upper"][ok])
    mae = np.abs(values - actual).mean(axis=0)
    base = {
        "last_value": np.abs(last[ok] - actual).mean(axis=0),
        "seasonal": np.abs(seasonal[ok] - actual).mean(axis=0),
    }
    return {
        "forecasts": int(ok.sum()),
        "unbanded": len(forecasts) - len(s["end"]),
        "coverage": float(inside.mean()),
        "coverage_by_step": inside.mean(axis=0).tolist(),
        "width_by_step": (s["upper"][ok] - s["lower"][ok]).mean(axis=0).tolist(),
        "mae_by_step": mae.tolist(),
        "baseline_mae_by_step": {k: v.tolist() for k, v in base.items()},
        "skill": {k: float(1 - mae.mean() / v.mean()) for k, v in base.items()},
        "skill_by_step": {k: (1 - mae / v).tolist() for k, v in base.items()},
    }


def residual_sigma(forecasts: list[dict[str, Any]], truth: Truth) -> float:
    """Std of the next-step residual (actual - forecast), target units."""
    s = _stack(forecasts)
    r = truth.at(s["steps"][:, 0]) - s["values"][:, 0]
    return float(np.nanstd(r))


def alarms(anomalies: list[dict[str, Any]], ts: np.ndarray) -> dict[str, Any]:
    """Anomalies started on clean data: count, per week, by reason."""
    started = [a for a in anomalies if a["anomaly"]]
    weeks = (float(ts[-1]) - float(ts[0])) / WEEK_S
    reasons: dict[str, int] = {}
    for a in started:
        reasons[a["reason"]] = reasons.get(a["reason"], 0) + 1
    return {
        "started": len(started),
        "weeks": weeks,
        "per_week": len(started) / weeks,
        "reasons": reasons,
        "times": [a["since_iso"] for a in started],
    }


def delays(
    anomalies: list[dict[str, Any]], faults: list[Fault], ts: np.ndarray, period_s: float
) -> dict[str, Any]:
    """For each fault: periods from its first faulty reading to the first anomaly started
    after it (the data time the agent published it), and that anomaly's reason."""
    started = [a for a in anomalies if a["anomaly"]]
    found: list[Optional[float]] = []
    reasons: list[Optional[str]] = []
    for f in faults:
        begin = float(ts[f.start])
        end = begin + (f.periods + GRACE_PERIODS) * period_s
        hit = next((a for a in started if begin <= a["_clock"] <= end), None)
        found.append(None if hit is None else (hit["_clock"] - begin) / period_s)
        reasons.append(None if hit is None else str(hit["reason"]))
    got = [d for d in found if d is not None]
    return {
        "faults": len(faults),
        "detected": len(got),
        "delays": found,
        "reasons": reasons,
        "median": float(np.median(got)) if got else None,
        "max": float(max(got)) if got else None,
        "size": faults[0].size if faults else 0.0,
        "periods": faults[0].periods if faults else 0,
    }
