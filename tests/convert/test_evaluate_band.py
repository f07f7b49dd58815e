"""`sensorcast evaluate` draws and scores the bundle's prediction band, on real data: the
demo bundle (dynamic, calibrated: its manifest has residual quantiles) over the test split
of the demo's 30 days, and the weather bundle over December of a real weather year. No
TensorFlow: a bundle is evaluated through the agent's own forecaster."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sensorcast.agent.cli import main as cli
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import read_bundle

from tests.conftest import DEMO_DIR

REPO = DEMO_DIR.parent.parent
WEATHER = REPO / "examples" / "weather"


def _evaluate(tmp_path: Path, *extra: str, name: str = "r") -> dict[str, Any]:
    report = tmp_path / f"{name}.json"
    args = ["evaluate", str(DEMO_DIR / "room.tflite"), str(DEMO_DIR / "room-30d.csv"),
            "--report", str(report), *extra]  # fmt: skip
    assert cli(args) == 0
    out: dict[str, Any] = json.loads(report.read_text())
    return out


def _png_height(path: Path) -> int:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int(struct.unpack(">I", head[20:24])[0])


def test_the_band_is_the_manifests_quantiles_and_its_coverage_is_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "band.png"
    r = _evaluate(tmp_path, "--plot", str(plot))
    out = capsys.readouterr().out
    band = r["band"]
    assert band["level"] == 0.8 and band["source"] == "residual_quantiles"
    assert len(band["coverage_by_step"]) == r["horizon"] == 12
    assert 0.72 <= band["coverage"] <= 0.9  # calibrated on the held-out days: near 80 %
    assert f"80% band (the bundle's residual quantiles): covers {band['coverage']:.1%}" in out
    # The plot has the coverage panel under the two of a model without a band.
    assert _png_height(plot) > 850 and plot.stat().st_size > 30_000

    # The same coverage, counted independently: the 10 % and 90 % residual quantiles of the
    # manifest around each forecast of the test split.
    bundle = read_bundle(DEMO_DIR / "room.tflite")
    acc = bundle.manifest.accuracy
    assert acc is not None
    low, high = np.array(acc.residual_quantiles["0.1"]), np.array(acc.residual_quantiles["0.9"])
    data = np.loadtxt(DEMO_DIR / "room-30d.csv", delimiter=",", skiprows=1)
    first, last = r["test_rows"]
    forecaster = Forecaster(bundle)
    inside = []
    for end in range(first - 1, last - 12 + 1):
        forecast = forecaster.predict(data[end - 23 : end + 1, 1:3]).copy()
        actual = data[end + 1 : end + 13, 1:2]
        inside.append((actual >= forecast + low) & (actual <= forecast + high))
    assert len(inside) == r["forecasts"]
    assert band["coverage"] == pytest.approx(float(np.mean(inside)), abs=1e-9)


def test_level_sets_the_band(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wide = _evaluate(tmp_path, "--level", "0.9", name="wide")["band"]
    half = _evaluate(tmp_path, "--level", "0.5", name="half")["band"]
    assert all(a > b for a, b in zip(wide["mean_width_by_step"], half["mean_width_by_step"]))
    assert wide["coverage"] > 0.8 > half["coverage"] > 0.35

    assert cli(["evaluate", str(DEMO_DIR / "room.tflite"), str(DEMO_DIR / "room-30d.csv"),
                "--level", "0.95"]) == 1  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--level 0.95" in err and "from 0.05 to 0.95" in err and "up to 0.9" in err


def test_the_weather_bundle_on_a_winter_it_never_saw(tmp_path: Path) -> None:
    """Trained on January-August, its residual quantiles measured on July-August: December's
    forecasts beat the last value, and the summer band covers less than it promised (the
    agent adapts it on the device; bench/quality_bench.py measures that)."""
    report = tmp_path / "weather.json"
    assert cli(["evaluate", str(WEATHER / "weather.tflite"),
                str(WEATHER / "greensboro-tmy3.csv"), "--report", str(report)]) == 0  # fmt: skip
    r = json.loads(report.read_text())
    assert r["period_s"] == 3600 and r["horizon"] == 6
    assert r["test_rows"][0] == 8760 * 9 // 10  # December: never trained on
    assert r["skill"] > 0.2
    assert 0.55 < r["band"]["coverage"] < 0.8
