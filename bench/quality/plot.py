"""The agent's published band on a replay, for a person (and the README) to look at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.quality.score import Truth

__all__ = ["plot_band"]

SHOWN_DAYS = 14  #: The top panel shows the replay's last this many days.
ROLLING = 168  #: Forecasts in the rolling coverage of the bottom panel (a week of hours).


def plot_band(path: Path, title: str, forecasts: list[dict[str, Any]], truth: Truth) -> None:
    """Top: actual, the published forecast for the next and the last step with their band,
    over the last :data:`SHOWN_DAYS` days; bottom: the band's rolling coverage over the
    whole replay against the nominal level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    banded = [f for f in forecasts if f["lower"] is not None]
    steps = np.array([f["steps"] for f in banded])
    values = np.array([[v[0] for v in f["values"]] for f in banded])
    lower = np.array([[v[0] for v in f["lower"]] for f in banded])
    upper = np.array([[v[0] for v in f["upper"]] for f in banded])
    level, horizon = float(banded[-1]["level"]), steps.shape[1]
    actual = truth.at(steps)
    days = (steps - steps[-1, 0]) / 86400
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), height_ratios=(2, 1))
    shown = days[:, 0] >= -SHOWN_DAYS
    top.plot(days[shown, 0], actual[shown, 0], color="black", lw=1.2, label="actual")
    for step, color in ((0, "tab:blue"), (horizon - 1, "tab:orange")):
        ahead = "next period" if step == 0 else f"{horizon} periods ahead"
        at = days[shown, step]
        top.plot(at, values[shown, step], color=color, lw=1, label=f"forecast, {ahead}")
        top.fill_between(at, lower[shown, step], upper[shown, step], color=color, alpha=0.2,
                         lw=0, label=f"{level:.0%} band, {ahead}")  # fmt: skip
    top.set_xlabel("days before the end of the replay")
    top.set_ylabel(str(banded[-1]["targets"][0]))
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8, ncol=3)
    inside = ((actual >= lower) & (actual <= upper)).astype(float)
    inside[~np.isfinite(actual)] = np.nan
    kernel = np.ones(ROLLING) / ROLLING
    for step, color in ((0, "tab:blue"), (horizon - 1, "tab:orange")):
        rolling = np.convolve(inside[:, step], kernel, mode="valid") * 100
        bottom.plot(days[ROLLING - 1 :, step], rolling, color=color, lw=1,
                    label=f"step {step + 1}")  # fmt: skip
    bottom.axhline(level * 100, color="gray", ls="--", lw=1, label="nominal")
    bottom.set_ylim(50, 100)
    bottom.set_xlabel("days before the end of the replay")
    bottom.set_ylabel(f"coverage, last {ROLLING} forecasts, %")
    bottom.legend(loc="lower left", fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
