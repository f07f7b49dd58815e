"""Prediction intervals kept calibrated on the device.

The band of a forecast is its values plus a lower and an upper offset per step and target:
quantiles of the signed residuals (actual - forecast, target units) at the probabilities
``alpha_lo`` and ``1 - alpha_hi``. Where those quantiles come from:

- the bundle's prior (:func:`prior_quantiles`): the converter's ``residual_quantiles``
  on held-out data, interpolated; beyond the outermost measured probabilities a Gaussian
  tail with the spread of those two; else a Gaussian from ``forecast_mae`` (a normal
  error's MAE is ``sigma * sqrt(2 / pi)``); else none;
- the device's own residuals (split conformal: the finite-sample order statistic of the
  rolling residuals of each step), blended in as they come: weight ``n / full_after`` on
  them (``n`` residuals of that step), the rest on the prior; with no prior, no band until
  ``min_samples`` residuals of every step arrived.

The probabilities adapt (adaptive conformal inference, Gibbs & Candès 2021, per side):
each scored forecast moves ``alpha <- alpha + gamma * (target - miss)`` where ``target`` is
``(1 - level) / 2`` and ``miss`` says whether the actual fell below (above) the band that
was published with that forecast. When the world drifts and actuals leave the band more
often, the band widens within tens of periods, before the rolling residuals catch up.

The band always contains the forecast itself (offsets ``<= 0 <=``), so consumers can rely
on ``lower <= values <= upper``.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Optional

import numpy as np
from sensorcast.agent.forecast.manifest import Accuracy

__all__ = ["GAMMA", "ConformalBand", "prior_quantiles"]

GRID = 1000  #: Probabilities at which a prior is tabulated: (i + 0.5) / GRID.
_P = (np.arange(GRID) + 0.5) / GRID
_Z = np.array([NormalDist().inv_cdf(float(p)) for p in _P])  # standard normal quantiles
ALPHA_MIN = 0.5 / GRID  #: Per-side miss probability floor (the band never becomes infinite).
ALPHA_MAX = 0.5  #: Per-side ceiling (the band shrinks at most to the median).
GAMMA = 0.01  #: ACI step: how fast the miss probability follows the observed misses.


def prior_quantiles(acc: Optional[Accuracy], horizon: int, targets: int) -> Optional[np.ndarray]:
    """The manifest's residual distribution as a ``(GRID, horizon, targets)`` table of signed
    quantiles (target units) at the grid's probabilities, or None when it has none.

    A table with fewer steps than ``horizon`` (a single-step model rolled out) is carried to
    the later steps widened by ``sqrt(step + 1)``, as a random walk's error grows; the
    device's own residuals soon replace that guess."""
    if acc is None:
        return None
    table: Optional[np.ndarray] = None
    if len(acc.residual_quantiles) >= 2:
        table = _from_quantiles(acc.residual_quantiles)
    elif acc.forecast_mae:
        sigma = np.asarray(acc.forecast_mae, dtype=np.float64) * math.sqrt(math.pi / 2)
        table = _Z[:, None, None] * sigma[None]
    if table is None or table.shape[2] != targets or table.shape[1] == 0:
        return None
    rows = table.shape[1]
    if rows < horizon:
        grow = np.sqrt(np.arange(rows, horizon) + 1.0) / math.sqrt(rows)
        extra = table[:, -1:, :] * grow[None, :, None]
        table = np.concatenate([table, extra], axis=1)
    return np.ascontiguousarray(table[:, :horizon])


def _from_quantiles(quantiles: dict[str, tuple[tuple[float, ...], ...]]) -> np.ndarray:
    """Interpolate measured quantiles onto the grid, Gaussian tails beyond them."""
    probs = sorted((float(name), name) for name in quantiles)
    p = np.array([pp for pp, _ in probs])
    q = np.array([quantiles[name] for _, name in probs], dtype=np.float64)  # (k, steps, targets)
    q = np.maximum.accumulate(q, axis=0)  # quantiles never decrease with probability
    z = np.array([NormalDist().inv_cdf(float(pp)) for pp in p])
    # The spread of the outermost measured pair, as a normal's sigma (>= a tiny floor, so a
    # constant residual still gives tails that grow).
    sigma = np.maximum((q[-1] - q[0]) / (z[-1] - z[0]), 1e-9)
    flat = q.reshape(len(p), -1)
    out = np.empty((GRID, flat.shape[1]))
    for col in range(flat.shape[1]):
        out[:, col] = np.interp(_P, p, flat[:, col])
    out = out.reshape(GRID, *q.shape[1:])
    low, high = p[0] > _P, p[-1] < _P
    out[low] = q[0][None] + sigma[None] * (_Z[low] - z[0])[:, None, None]
    out[high] = q[-1][None] + sigma[None] * (_Z[high] - z[-1])[:, None, None]
    return out


class ConformalBand:
    """The offsets of one stream's band, per step and target, and their adaptation.

    ``prior``: :func:`prior_quantiles`' table or None; ``full_after``: residuals of a step
    after which its band rests on the device's residuals alone.
    """

    def __init__(
        self,
        level: float,
        horizon: int,
        targets: int,
        prior: Optional[np.ndarray] = None,
        min_samples: int = 20,
        full_after: int = 80,
        gamma: float = GAMMA,
    ) -> None:
        self.level = level
        self.target = (1.0 - level) / 2.0  #: Nominal miss probability per side.
        self.gamma = gamma
        self.alpha_lo = np.full((horizon, targets), self.target)
        self.alpha_hi = np.full((horizon, targets), self.target)
        self._prior = prior
        self._min = max(min_samples, 1)
        self._full = max(full_after, 1)
        #: ``(lower, upper)`` offsets, each ``(horizon, targets)``, or None (no band yet).
        self.offsets: Optional[tuple[np.ndarray, np.ndarray]] = None
        if prior is not None:
            self.offsets = _around(_at(prior, self.alpha_lo), _at(prior, 1.0 - self.alpha_hi))

    def adapt(self, known: np.ndarray, below: np.ndarray, above: np.ndarray) -> None:
        """Fold in ``known`` scored forecasts per step and target, of which ``below`` fell
        under the band published with them and ``above`` over it: the ACI update summed over
        them (one update per forecast, added at once)."""
        g, t = self.gamma, self.target
        lo = self.alpha_lo + g * (known * t - below)
        hi = self.alpha_hi + g * (known * t - above)
        self.alpha_lo = np.minimum(np.maximum(lo, ALPHA_MIN), ALPHA_MAX)
        self.alpha_hi = np.minimum(np.maximum(hi, ALPHA_MIN), ALPHA_MAX)

    def refresh(self, residuals: np.ndarray, counts: np.ndarray) -> None:
        """Recompute :attr:`offsets` from the rolling signed residuals ``(horizon, targets,
        samples)``, ``counts`` ``(horizon, targets)`` of them finite (the rest NaN)."""
        p_lo, p_hi = self.alpha_lo, 1.0 - self.alpha_hi
        prior = self._prior
        if prior is None or (counts >= self._full).all():  # the device's residuals alone
            if prior is None and (counts < self._min).any():
                self.offsets = None
                return
            self.offsets = _around(*_empirical(residuals, counts, p_lo, p_hi))
            return
        lo, hi = _at(prior, p_lo), _at(prior, p_hi)
        if counts.any():
            w = np.minimum(counts / self._full, 1.0)
            e_lo, e_hi = _empirical(residuals, counts, p_lo, p_hi)
            lo = (1.0 - w) * lo + w * np.where(counts > 0, e_lo, 0.0)
            hi = (1.0 - w) * hi + w * np.where(counts > 0, e_hi, 0.0)
        self.offsets = _around(lo, hi)


def _around(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets that keep the forecast inside its band: a model biased by more than its
    spread gets a band reaching from the forecast to where the actuals are (a little wider
    than the nominal level asks; ACI narrows the other side to make up for it)."""
    return np.minimum(lower, 0.0), np.maximum(upper, 0.0)


def _at(table: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The tabulated quantile at probability ``p`` per step and target (linear between
    grid points)."""
    f = p * GRID - 0.5
    i = np.minimum(np.maximum(f.astype(np.intp), 0), GRID - 2)  # f >= 0: truncation floors
    frac = np.minimum(np.maximum(f - i, 0.0), 1.0)
    steps, targets = _grid(p.shape)
    a = table[i, steps, targets]
    out: np.ndarray = a + (table[i + 1, steps, targets] - a) * frac
    return out


def _empirical(
    residuals: np.ndarray, counts: np.ndarray, p_lo: np.ndarray, p_hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Split-conformal quantiles of each step's ``counts`` residuals (``residuals``:
    ``(steps, targets, samples)``): the ``floor(p (n + 1))``-th smallest below, the
    ``ceil(p (n + 1))``-th above (clipped to the sample when ``n`` is too small to say
    more)."""
    ordered = np.sort(residuals, axis=-1)  # unfilled (NaN) entries are sorted to the end
    n = np.maximum(counts, 1)
    # np.minimum/maximum, not np.clip: the same integers, without np.clip's wrapper cost
    k_lo = np.minimum(np.maximum(np.floor(p_lo * (n + 1)).astype(np.intp) - 1, 0), n - 1)
    k_hi = np.minimum(np.maximum(np.ceil(p_hi * (n + 1)).astype(np.intp) - 1, 0), n - 1)
    steps, targets = _grid(counts.shape)
    return ordered[steps, targets, k_lo], ordered[steps, targets, k_hi]


def _grid(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Step and target indices that broadcast to ``shape`` ``(steps, targets)``."""
    return np.arange(shape[0])[:, None], np.arange(shape[1])[None, :]
