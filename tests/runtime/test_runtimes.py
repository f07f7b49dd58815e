"""The same bundle gives the same forecasts on every runtime.

`scripts/test` runs this file three times: with LiteRT (the default), with
SENSORCAST_RUNTIME=tensorflow, and in .venv-tflite with tflite-runtime 2.14.
Every run compares with the same Keras golden outputs, so agreement with
Keras within 1e-4 °C on each runtime means the runtimes agree with each other.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.agent.forecast.runtime import load_runtime

from tests.support.paths import REPO

FLOAT32 = REPO / "tests" / "data" / "room_float32.tflite"


def test_the_requested_runtime_is_the_one_in_use() -> None:
    runtime = load_runtime()
    wanted = os.environ.get("SENSORCAST_RUNTIME", "litert")
    assert runtime.name == wanted
    assert Forecaster(read_bundle(FLOAT32)).runtime.name == wanted


def test_float32_bundle_matches_keras_on_this_runtime(demo_dir: Path) -> None:
    golden = np.load(demo_dir / "golden.npz")
    forecaster = Forecaster(read_bundle(FLOAT32))
    for window, expected in zip(golden["windows"], golden["forecast"]):
        np.testing.assert_allclose(
            forecaster.predict(window.astype(np.float32)), expected, atol=1e-4
        )


def test_shipped_bundle_runs_or_is_refused_clearly(demo_dir: Path) -> None:
    bundle = read_bundle(demo_dir / "room.tflite")
    runtime = load_runtime()
    if runtime.name == "tflite-runtime":
        # TF 2.21's dynamic-range ops are newer than tflite-runtime 2.14 knows.
        with pytest.raises(ModelError, match=r"needs a TFLite runtime >= 2\.17"):
            Forecaster(bundle)
        return
    golden = np.load(demo_dir / "golden.npz")
    assert bundle.manifest.accuracy is not None
    forecaster = Forecaster(bundle)
    worst = max(
        float(np.abs(forecaster.predict(w.astype(np.float32)) - e).max())
        for w, e in zip(golden["windows"], golden["forecast"])
    )
    assert worst <= 1.5 * bundle.manifest.accuracy.max_abs + 1e-5
