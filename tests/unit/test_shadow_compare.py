"""A shadow that started later is compared with the live model on the same actuals: the live
model's error over its newest residuals, as many per step as the shadow has."""

from __future__ import annotations

import numpy as np
from sensorcast.agent.telemetry.scores import Scores


def test_recent_mae_reads_each_steps_newest_residuals_in_the_ring() -> None:
    scores = Scores(samples=5, horizon=2, baselines=0, targets=1, min_samples=1)
    scores.ring[0, 0, 0, :] = [1.0, -2.0, 3.0, 4.0, -5.0]  # step 0: 7 written, rows 1, 0 newest
    scores.ring[0, 1, 0, :3] = [10.0, 20.0, 30.0]  # step 1: 3 written
    scores.next[:] = [7, 3]
    got = scores.recent_mae(np.array([2, 9]))
    # step 0: rows 1 and 0 (|-2|, |1|); step 1: all three kept, newest first
    np.testing.assert_allclose(got[:, 0], [1.5, 20.0])
    np.testing.assert_allclose(scores.recent_mae(np.array([5, 1]))[:, 0], [3.0, 30.0])
    assert np.isnan(scores.recent_mae(np.array([0, 0]))).all()
