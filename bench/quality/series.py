"""The real series the benchmark replays, with the bundle forecasting each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.harness.paths import REPO

__all__ = ["SERIES", "Series", "load"]


@dataclass(frozen=True)
class Series:
    """A CSV (``ts`` + sensor columns), the bundle forecasting it, the rows to replay."""

    name: str
    csv: Path
    bundle: Path
    features: tuple[str, ...]  #: CSV columns fed to the agent, in the bundle's order.
    target: str
    start_ts: float  #: First replayed row (Unix s, data time); earlier rows are not sent.
    note: str  #: What the replayed rows are to the model (held out how).


SERIES = {
    "weather": Series(
        name="weather",
        csv=REPO / "examples/weather/greensboro-tmy3.csv",
        bundle=REPO / "examples/weather/weather.tflite",
        features=("temperature", "humidity", "ghi"),
        target="temperature",
        start_ts=978_307_200 + 243 * 86400,  # 2001-09-01: the model saw January-August only
        note="Greensboro NC TMY3, September-December (never trained on nor calibrated on)",
    ),
    "room": Series(
        name="room",
        csv=REPO / "examples/demo/room-30d.csv",
        bundle=REPO / "examples/demo/room.tflite",
        features=("temperature", "humidity"),
        target="temperature",
        start_ts=1_767_225_600 + 21 * 86400,  # the last 9 of 30 days: not trained on
        note="demo room, last 9 of 30 days (not trained on; the converter's residual "
        "quantiles come from its last 6 days)",
    ),
}


def load(series: Series) -> tuple[np.ndarray, np.ndarray]:
    """``(ts (n,), values (n, features))`` of the rows to replay, data units."""
    with open(series.csv) as f:
        header = f.readline().strip().split(",")
    data = np.loadtxt(series.csv, delimiter=",", skiprows=1)
    cols = [header.index(name) for name in series.features]
    keep = data[:, header.index("ts")] >= series.start_ts
    return data[keep, header.index("ts")], data[keep][:, cols]
