"""Rebuild the weather model and its bundle: examples/weather/weather.{keras,tflite}.

Run from the repository root with the [convert] extra installed:

    python examples/weather/train.py                 # train, then convert and evaluate
    python examples/weather/train.py --convert-only  # convert weather.keras, evaluate

The data is a real year of hourly weather (greensboro-tmy3.csv, see README.md). The model
forecasts the temperature 6 hours ahead from the last 24 hours of temperature, humidity and
irradiance (and the time of day, computed from the timestamp). It is trained with
`sensorcast train` on January-August ONLY (its 70/20/10 split of those rows: weights from
January to mid-June, early stopping on the rest). The converter is given January-August
too: it verifies the bundle over that range of readings (winter included) and measures the
residual quantiles on its last 20 % of windows (July-August: rows training did not fit).
September-December is never seen: bench/quality_bench.py replays it through the
agent, and `sensorcast evaluate` scores the last 10 % of the year (December).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "greensboro-tmy3.csv"
WINDOW, HORIZON, PERIOD_S = 24, 6, 3600  # a day of hours -> the next 6 hours
FEATURES, TARGETS, TIME = ["temperature", "humidity", "ghi"], ["temperature"], "day"
TIME_FLAG = "day_sin=day_sin,day_cos=day_cos"
TRAIN_END = 978_307_200 + 243 * 86400  # 2001-09-01T00:00:00Z: rows before it train


def main() -> int:
    rows = np.loadtxt(DATA, delimiter=",", skiprows=1)
    header = "ts," + ",".join(FEATURES)
    train_rows = rows[rows[:, 0] < TRAIN_END]
    with tempfile.TemporaryDirectory() as tmp:
        train_csv = Path(tmp) / "jan-aug.csv"
        np.savetxt(train_csv, train_rows, delimiter=",", header=header, comments="", fmt="%.6g")
        code = subprocess.call(
            [
                sys.executable, "-m", "sensorcast.agent", "train", str(train_csv),
                "--features", ",".join(FEATURES), "--targets", ",".join(TARGETS),
                "--time-features", TIME,
                "--window", str(WINDOW), "--horizon", str(HORIZON), "--period", str(PERIOD_S),
                "--units", "32", "--quiet",
                "-o", str(HERE / "weather.keras"), "--norm-out", str(HERE / "norm.json"),
            ]
        )  # fmt: skip
        if code:
            return code
    code = convert()
    if code:
        return code
    return evaluate()


def evaluate() -> int:
    """Score the bundle on December (the last 10 % of the year) against the naive baselines,
    with the coverage of its 80 % band; the plot is the README's docs/img/forecast-band.png."""
    return subprocess.call(
        [
            sys.executable, "-m", "sensorcast.agent", "evaluate",
            "examples/weather/weather.tflite", "examples/weather/greensboro-tmy3.csv",
            "--plot", "docs/img/forecast-band.png", "--report", "examples/weather/evaluate.json",
        ],
        cwd=HERE.parent.parent,  # the report names the files relative to the repository
    )  # fmt: skip


def convert() -> int:
    """Convert weather.keras (float32: the bundle is small either way), verified over the
    January-August readings, its residual quantiles measured on July-August."""
    rows = np.loadtxt(DATA, delimiter=",", skiprows=1)
    with tempfile.TemporaryDirectory() as tmp:
        held_csv = Path(tmp) / "jan-aug.csv"
        header = "ts," + ",".join(FEATURES)
        np.savetxt(held_csv, rows[rows[:, 0] < TRAIN_END], delimiter=",", header=header,
                   comments="", fmt="%.6g")  # fmt: skip
        return subprocess.call(
            [
                sys.executable, "-m", "sensorcast.agent", "convert", str(HERE / "weather.keras"),
                "-o", str(HERE / "weather.tflite"),
                "--quantize", "float32",
                "--report", str(HERE / "report.json"),
                "--calibration", str(held_csv),
                "--norm", str(HERE / "norm.json"),
                "--features", ",".join([*FEATURES, "day_sin", "day_cos"]),
                "--targets", ",".join(TARGETS),
                "--time-features", TIME_FLAG,
                "--period", str(PERIOD_S),
                "--quiet",
            ]
        )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit((convert() or evaluate()) if "--convert-only" in sys.argv[1:] else main())
