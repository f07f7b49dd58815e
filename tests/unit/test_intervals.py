"""Prediction intervals: the prior from the manifest, split conformal on the device's own
residuals, and adaptive conformal inference, on the demo model's real forecasts of the
30-day room data (the agent's own runtime: no TensorFlow)."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist
from typing import Optional

import numpy as np
import pytest
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import Accuracy, read_bundle
from sensorcast.agent.forecast.runtime import load_runtime
from sensorcast.agent.telemetry.intervals import ConformalBand, prior_quantiles
from sensorcast.agent.telemetry.quality import QualityTracker

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


class Replay:
    """The demo bundle's forecasts of every window of room-30d.csv, and what happened."""

    def __init__(self) -> None:
        bundle = read_bundle(DEMO / "room.tflite")
        self.manifest = m = bundle.manifest
        self.rows = np.loadtxt(DEMO / "room-30d.csv", delimiter=",", skiprows=1)[:, 1:]
        forecaster = Forecaster(bundle, load_runtime())
        w, h = m.window, m.horizon
        self.n = len(self.rows) - w - h + 1  # windows with every step's actual known
        self.forecasts = np.stack(
            [forecaster.predict(self.rows[e : e + w]).copy() for e in range(self.n)]
        )
        self.truth = np.stack([self.rows[e + w : e + w + h, :1] for e in range(self.n)])

    def run(
        self, prior: bool = True, gamma: float = 0.01, doubled_from: Optional[int] = None
    ) -> np.ndarray:
        """Replay through a tracker; per forecast and step, was the actual inside the band
        published with it (NaN: no band yet). From ``doubled_from`` on, the forecasts are
        made twice as wrong (residual x 2): the world drifted from the training data."""
        m, w = self.manifest, self.manifest.window
        q = QualityTracker(
            m.horizon, [0], level=0.8,
            prior=prior_quantiles(m.accuracy, m.horizon, 1) if prior else None,
        )  # fmt: skip
        q.interval.gamma = gamma
        inside = np.full((self.n, m.horizon), np.nan)
        for e in range(self.n):
            slot = e + w - 1
            q.actual(slot, self.rows[slot])
            values = self.forecasts[e]
            if doubled_from is not None and e >= doubled_from:
                values = self.truth[e] - 2 * (self.truth[e] - values)
            band = q.band(values)
            if band is not None:
                inside[e] = ((band[0] <= self.truth[e]) & (self.truth[e] <= band[1]))[:, 0]
            q.forecast(slot, values, False, self.rows[slot - w + 1 : slot + 1])
        return inside


@pytest.fixture(scope="module")
def replay() -> Replay:
    return Replay()


def test_the_prior_interpolates_the_manifest_quantiles_with_gaussian_tails(
    replay: Replay,
) -> None:
    acc = replay.manifest.accuracy
    assert acc is not None and len(acc.residual_quantiles) >= 2
    table = prior_quantiles(acc, 12, 1)
    assert table is not None and table.shape == (1000, 12, 1)
    probs = (np.arange(1000) + 0.5) / 1000
    q05, q95 = (np.array(acc.residual_quantiles[k])[:, 0] for k in ("0.05", "0.95"))
    i05 = int(np.argmin(abs(probs - 0.05)))
    np.testing.assert_allclose(table[i05, :, 0], q05, atol=0.01 * (q95 - q05).max())
    # Beyond 5 %: the Gaussian with the 5-95 % spread, from the measured 5 % on.
    sigma = (q95 - q05) / (2 * NormalDist().inv_cdf(0.95))
    z = NormalDist().inv_cdf(float(probs[9])) - NormalDist().inv_cdf(0.05)
    np.testing.assert_allclose(table[9, :, 0], q05 + sigma * z, rtol=1e-6)
    assert (np.diff(table, axis=0) >= 0).all()  # quantiles never decrease
    # A manifest with only the MAE: a centred Gaussian with sigma = MAE * sqrt(pi / 2).
    mae = Accuracy(0.0, 0.0, 0, "calibration", forecast_mae=((0.2,), (0.4,)))
    gauss = prior_quantiles(mae, 3, 1)  # a rolled-out third step: widened by sqrt(3 / 2)
    assert gauss is not None
    i90 = int(np.argmin(abs(probs - 0.9)))
    want = np.array([0.2, 0.4, 0.4 * math.sqrt(1.5)]) * math.sqrt(math.pi / 2)
    z90 = NormalDist().inv_cdf(float(probs[i90]))
    np.testing.assert_allclose(gauss[i90, :, 0], want * z90, rtol=1e-6)
    assert prior_quantiles(Accuracy(0.0, 0.0, 0, "synthetic"), 3, 1) is None


def test_the_aci_update_over_k_forecasts_is_their_sum() -> None:
    one, many = ConformalBand(0.8, 2, 1), ConformalBand(0.8, 2, 1)
    misses = [(1, 0), (0, 0), (0, 1), (1, 0), (0, 0)]  # (below, above) per forecast, step 0
    for below, above in misses:
        one.adapt(np.array([[1.0], [0.0]]), np.array([[below], [0]]), np.array([[above], [0]]))
    many.adapt(np.array([[5.0], [0.0]]), np.array([[2.0], [0.0]]), np.array([[1.0], [0.0]]))
    np.testing.assert_allclose(one.alpha_lo, many.alpha_lo)
    np.testing.assert_allclose(one.alpha_hi, many.alpha_hi)
    assert many.alpha_lo[0, 0] == pytest.approx(0.1 + 0.01 * (5 * 0.1 - 2))
    assert many.alpha_lo[1, 0] == pytest.approx(0.1)  # nothing scored on step 1: unchanged


def test_without_a_prior_no_band_until_min_samples_then_the_order_statistics() -> None:
    q = QualityTracker(horizon=1, target_index=[0], min_samples=5, samples=10)
    residuals = [0.3, -0.1, 0.2, -0.4, 0.1, 0.0, 0.5, -0.2, -0.3, 0.4]
    for slot, r in enumerate(residuals):
        assert q.band(np.array([[20.0]])) is None
        q.forecast(slot, np.array([[20.0]]))
        q.actual(slot + 1, np.array([20.0 + r, 50.0]))
    q.interval.gamma = 0.0
    q.mae()  # scores the last ones
    band = q.band(np.array([[20.0]]))
    assert band is not None
    ordered = sorted(residuals)  # n = 10: floor(0.1 * 11) = 1st, ceil(0.9 * 11) = 10th
    assert band[0][0, 0] == pytest.approx(20.0 + ordered[0])
    assert band[1][0, 0] == pytest.approx(20.0 + ordered[9])


def test_the_band_covers_the_nominal_share_of_real_room_data(replay: Replay) -> None:
    for prior in (True, False):
        inside = replay.run(prior=prior)
        by_step = np.nanmean(inside, axis=0)
        assert 0.77 <= np.nanmean(inside) <= 0.83, (prior, by_step)
        assert ((by_step > 0.74) & (by_step < 0.86)).all(), (prior, by_step)
    assert not np.isnan(replay.run(prior=True)[0]).any()  # a prior: a band from the start


def test_after_a_drift_the_band_recalibrates_within_a_few_hundred_periods(
    replay: Replay,
) -> None:
    half = replay.n // 2
    coverage = np.nanmean(replay.run(doubled_from=half), axis=1)  # per forecast, all steps
    before, hit = np.mean(coverage[:half]), np.mean(coverage[half : half + 100])
    assert 0.77 <= before <= 0.83
    assert hit < 0.75  # the residuals doubled: the old band misses (the test can tell)
    assert np.mean(coverage[half + 100 : half + 300]) >= 0.72  # ACI widened it quickly
    assert 0.76 <= np.mean(coverage[half + 300 :]) <= 0.84  # and it holds
    # Without ACI (gamma 0) the first hundred after the drift are worse than with it.
    fixed = np.nanmean(replay.run(doubled_from=half, gamma=0.0), axis=1)
    assert np.mean(fixed[half + 100 : half + 200]) < np.mean(coverage[half + 100 : half + 200])
