"""The quality benchmark's replay on real data (bench/quality): the demo room's 9 held-out
days through the agent's own pipeline (``Service(cfg).open()``) in data time. The band the
agent publishes holds near 80 % of the actuals at every step (the benchmark's target is
75-85 %; this asserts a looser bound), the model beats the naive baselines, and a level step
of three times the series' std is raised as an anomaly within two periods."""

from __future__ import annotations

import numpy as np

from bench.quality.faults import Fault, inject, starts
from bench.quality.replay import replay
from bench.quality.score import Truth, alarms, coverage_skill, delays
from bench.quality.series import SERIES, load


def test_the_published_band_holds_its_level_and_a_step_is_raised_at_once() -> None:
    room = SERIES["room"]
    ts, values = load(room)
    truth = Truth(ts, values[:, 0], 300.0)
    clean = replay(room.bundle, ts, values)
    q = coverage_skill(clean.forecasts, truth)
    assert q["forecasts"] > 2000 and q["unbanded"] == 0
    assert 0.72 <= q["coverage"] <= 0.88, q["coverage_by_step"]
    assert all(0.68 <= c <= 0.92 for c in q["coverage_by_step"]), q["coverage_by_step"]
    widths = q["width_by_step"]
    assert widths[-1] > 1.3 * widths[0]  # the band widens with the horizon, as errors do
    assert q["skill"]["last_value"] > 0.2 and q["skill"]["seasonal"] > 0.5
    assert alarms(clean.anomalies, ts)["per_week"] <= 2.0

    size = 3 * float(np.std(values[:, 0]))
    faults = [Fault("step", s, 12, size) for s in starts(len(ts), 4, 48, 12)]
    found = delays(replay(room.bundle, ts, inject(values, 0, faults)).anomalies, faults, ts, 300)
    assert found["detected"] == 4 and found["max"] is not None and found["max"] <= 2, found
