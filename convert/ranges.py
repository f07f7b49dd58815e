"""Input ranges: int8 calibration with headroom, and the windows beyond the data's range that
every mode is measured on, so a bundle records the range it was verified on.

Time series trend past their history, so a forecaster meets inputs beyond its training data
as a matter of course. Full-integer int8 saturates at the range it was calibrated on; calibrating
with headroom moves that edge out, and measuring on shifted and stretched windows says where
each mode still holds. Computed time features (sin/cos, always within [-1, 1]) are never moved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensorcast.agent.forecast.manifest import Manifest
from sensorcast.convert.calibrate import Calibration
from sensorcast.convert.load import SourceModel
from sensorcast.convert.verify import reference_forecast

__all__ = [
    "HEADROOM_STD",
    "LEVELS",
    "Beyond",
    "Checks",
    "build_checks",
    "feature_range",
    "headroom_calibration",
]

#: int8 calibration reaches this many of each input's std beyond the observed data.
HEADROOM_STD = 1.0
#: Every mode is measured on windows moved this many stds beyond the data's range.
LEVELS = (1, 2)
#: Held-out windows moved per level (each is shifted up, shifted down and stretched).
BEYOND_WINDOWS = 96
#: Windows in the int8 representative dataset, at most (originals plus moved copies).
MAX_CALIBRATION = 768


@dataclass(frozen=True)
class Beyond:
    """Windows moved ``level`` stds beyond the data's range, and the reference's forecasts."""

    level: int
    windows: np.ndarray  #: (n, window, features), reading units.
    expected: np.ndarray  #: (n, horizon, targets), target units.
    #: The input range these windows and the data cover, reading units, by sensor feature.
    covers: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class Checks:
    """Every set of windows a candidate is measured on, with the reference's forecasts."""

    held: np.ndarray  #: Held-out windows, reading units.
    held_expected: np.ndarray
    every: np.ndarray  #: Every window (calibration and held-out).
    every_expected: np.ndarray
    beyond: tuple[Beyond, ...]  #: One per level of :data:`LEVELS`.
    observed: dict[str, tuple[float, float]]  #: The data's range, by sensor feature.

    def windows(self) -> np.ndarray:
        """Every window above in one array, in the order :meth:`split` expects."""
        return np.concatenate([self.held, self.every, *(b.windows for b in self.beyond)])

    def split(self, forecasts: np.ndarray) -> list[np.ndarray]:
        """Cut the forecasts for :meth:`windows` back into held, every, beyond..."""
        sizes = [len(self.held), len(self.every), *(len(b.windows) for b in self.beyond)]
        return np.split(forecasts, np.cumsum(sizes)[:-1])


def _sensor_index(manifest: Manifest) -> list[int]:
    return [i for i, f in enumerate(manifest.features) if f not in manifest.computed]


def feature_range(windows: np.ndarray, manifest: Manifest) -> dict[str, tuple[float, float]]:
    """Each sensor feature's (min, max) over ``windows``, reading units."""
    return {
        manifest.features[i]: (float(windows[..., i].min()), float(windows[..., i].max()))
        for i in _sensor_index(manifest)
    }


def _spread(windows: np.ndarray, index: list[int]) -> np.ndarray:
    """Each feature's std over every step of ``windows`` (0 for the ones not in ``index``,
    1 where the data is constant)."""
    std = np.zeros(windows.shape[-1])
    if index:
        flat = windows[..., index].reshape(-1, len(index))
        s = flat.std(axis=0)
        std[index] = np.where(s > 0, s, 1.0)
    return std


def _moved(base: np.ndarray, every: np.ndarray, std: np.ndarray, level: float) -> np.ndarray:
    """``base`` shifted up and down by ``level`` stds, and stretched about the data's mean so
    its farthest value moves ``level`` stds out."""
    flat = every.reshape(-1, every.shape[-1])
    mean = flat.mean(axis=0)
    reach = np.abs(flat - mean).max(axis=0)
    stretch = np.where(reach > 0, (reach + level * std) / np.where(reach > 0, reach, 1.0), 1.0)
    moved: np.ndarray = np.concatenate(
        [base + level * std, base - level * std, mean + (base - mean) * stretch]
    )
    return moved


def _thin(windows: np.ndarray, n: int) -> np.ndarray:
    if len(windows) <= n:
        return windows
    picked: np.ndarray = windows[np.linspace(0, len(windows) - 1, n).round().astype(int)]
    return picked


def build_checks(source: SourceModel, data: Calibration, manifest: Manifest) -> Checks:
    """The held-out windows, every window, and the windows beyond the data's range, each
    with the reference model's forecasts (computed once, shared by every candidate)."""
    same = data.calibrate is data.evaluate or (
        data.calibrate.shape == data.evaluate.shape
        and (np.array_equal(data.calibrate, data.evaluate))
    )
    every = data.evaluate if same else np.concatenate([data.calibrate, data.evaluate])
    index = _sensor_index(manifest)
    std = _spread(every, index)
    # The held-out windows, plus the windows that hold each feature's extremes, so the moved
    # windows reach the data's whole range plus the level.
    extremes = [int(np.argmax(every[..., i].max(axis=1))) for i in index]
    extremes += [int(np.argmin(every[..., i].min(axis=1))) for i in index]
    base = np.concatenate([_thin(data.evaluate, BEYOND_WINDOWS), every[extremes]])
    observed = feature_range(every, manifest)
    beyond = []
    for level in LEVELS:
        moved = _moved(base, every, std, level)
        beyond.append(
            Beyond(
                level=level,
                windows=moved,
                expected=reference_forecast(source, moved, manifest),
                covers=feature_range(np.concatenate([every, moved]), manifest),
            )
        )
    return Checks(
        held=data.evaluate,
        held_expected=reference_forecast(source, data.evaluate, manifest),
        every=every,
        every_expected=reference_forecast(source, every, manifest),
        beyond=tuple(beyond),
        observed=observed,
    )


def headroom_calibration(inputs: np.ndarray, manifest: Manifest) -> np.ndarray:
    """The int8 representative windows (model-input units): the calibration windows plus
    copies shifted and stretched :data:`HEADROOM_STD` stds beyond them, so a forecast that
    trends past the history is not clipped at the training data's edge."""
    index = _sensor_index(manifest)
    if not index:
        return inputs
    std = _spread(inputs, index)
    room = max(0, MAX_CALIBRATION - len(inputs))
    base = _thin(inputs, max(1, room // 3))
    extremes = [int(np.argmax(inputs[..., i].max(axis=1))) for i in index]
    extremes += [int(np.argmin(inputs[..., i].min(axis=1))) for i in index]
    base = np.concatenate([base, inputs[extremes]])
    moved = _moved(base, inputs, std, HEADROOM_STD)
    out: np.ndarray = np.concatenate([inputs, moved]).astype(np.float32)
    return out
