"""Autoregressive rollout of a single-step model, checked against the same loop in Keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.forecaster import Forecaster, Rollout
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.convert.cli import main as convert_main

W = 10


def test_rollout_matches_keras_step_by_step(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [keras.Input((W, 2)), keras.layers.LSTM(8), keras.layers.Dense(1)]
    )  # one step of feature "b"
    model.save(tmp_path / "one.keras")
    out = tmp_path / "one.tflite"
    args = [str(tmp_path / "one.keras"), "-o", str(out), "--features", "a,b", "--targets", "b",
            "--period", "60", "--quiet"]  # fmt: skip
    assert convert_main(args) == 0

    window = np.random.default_rng(0).standard_normal((W, 2)).astype(np.float32)
    steps = 6
    got = Rollout(Forecaster(read_bundle(out)), steps).predict(window).copy()

    work = window.copy()
    expected = []
    for _ in range(steps):
        y = float(model.predict(work[None], verbose=0)[0, 0])
        expected.append(y)
        row = work[-1].copy()
        row[1] = y  # the target replaces its feature, the others carry forward
        work = np.vstack([work[1:], row])
    np.testing.assert_allclose(got[:, 0], expected, atol=1e-4)
    assert got.shape == (steps, 1)


def test_rollout_refuses_multi_step_models(demo_dir: Path) -> None:
    with pytest.raises(ModelError, match="single-step model"):
        Rollout(Forecaster(read_bundle(demo_dir / "room.tflite")), 3)
