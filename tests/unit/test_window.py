"""The rolling window: grid slots, resampling, carry-forward, gaps, rejects."""

from __future__ import annotations

import numpy as np
import pytest
from sensorcast.agent.window import (
    REASONS,
    REJECT_DUPLICATE,
    REJECT_FUTURE,
    REJECT_LATE,
    REJECT_NONFINITE,
    REJECT_OUT_OF_ORDER,
    Window,
)

P = 60.0
NOW = 1e9  # any wall clock well after the readings used here


def feed(w: Window, rows: list[tuple[float, list[float]]]) -> list[int]:
    out = []
    for ts, values in rows:
        for f, v in enumerate(values):
            out.append(w.add(f, ts, v, NOW))
    return out


def test_one_reading_per_period_fills_the_window_in_order() -> None:
    w = Window(2, 3, P)
    feed(w, [(i * P, [i, 10 * i]) for i in range(4)])
    assert w.filled == 3  # the fourth slot is still open
    assert w.ready
    np.testing.assert_array_equal(w.view(), [[0, 0], [1, 10], [2, 20]])
    assert w.closed_through == 2


def test_open_slot_closes_by_the_wall_clock_after_the_delay() -> None:
    w = Window(1, 2, P, close_delay_s=2.0)
    w.add(0, 0.0, 1.0, now=1.0)
    w.add(0, 60.0, 2.0, now=61.0)
    assert w.filled == 1
    assert w.close_due(now=121.9) == 0  # slot [60,120) ends at 120, +2 s delay
    assert w.close_due(now=122.0) == 1
    np.testing.assert_array_equal(w.view(), [[1.0], [2.0]])
    assert w.add(0, 119.0, 5.0, now=130.0) in (REJECT_LATE, REJECT_OUT_OF_ORDER)


def test_mean_and_last_resampling() -> None:
    for policy, expected in (("mean", 2.0), ("last", 3.0)):
        w = Window(1, 1, P, resample=policy)
        feed(w, [(0, [1.0]), (20, [2.0]), (40, [3.0]), (60, [9.0])])
        assert w.view()[0, 0] == expected, policy


def test_short_gap_carries_last_value_forward() -> None:
    w = Window(1, 4, P, max_gap_s=2 * P)
    feed(w, [(0, [1.0]), (60, [2.0]), (240, [5.0]), (300, [6.0])])
    # slots 2 and 3 had no reading: 2.0 carried forward (gap of 2 periods is allowed)
    np.testing.assert_array_equal(w.view()[:, 0], [2.0, 2.0, 2.0, 5.0])
    assert w.gaps == 0


def test_long_gap_empties_the_window_instead_of_inventing_data() -> None:
    w = Window(1, 3, P, max_gap_s=P)
    feed(w, [(i * P, [float(i)]) for i in range(4)])
    assert w.ready
    feed(w, [(10 * P, [10.0]), (11 * P, [11.0])])
    assert w.gaps == 1
    assert w.filled == 1  # only slot 10 since the gap
    assert not w.ready


def test_huge_gap_is_cheap() -> None:
    w = Window(1, 3, P)
    feed(w, [(0, [1.0]), (60, [1.0])])
    feed(w, [(60 * 1e7, [2.0]), (60 * 1e7 + 60, [2.0])])  # ten million periods later
    assert w.filled == 1 and w.gaps == 1


def test_a_feature_never_seen_keeps_the_window_empty() -> None:
    w = Window(2, 2, P)
    for i in range(5):
        w.add(0, i * P, 1.0, NOW)
    assert w.filled == 0


def test_rejects_are_classified() -> None:
    w = Window(1, 2, P, max_future_s=100)
    assert w.add(0, 0.0, float("nan"), NOW) == REJECT_NONFINITE
    assert w.add(0, float("inf"), 1.0, NOW) == REJECT_NONFINITE
    assert w.add(0, NOW + 101, 1.0, NOW) == REJECT_FUTURE
    assert w.add(0, 100.0, 1.0, NOW) == 0
    assert w.add(0, 100.0, 2.0, NOW) == REJECT_DUPLICATE
    assert w.add(0, 90.0, 2.0, NOW) == REJECT_OUT_OF_ORDER
    assert w.add(0, 150.0, 2.0, NOW) == 1  # closes slot 1
    assert w.close_due(NOW) == 1
    w2 = Window(2, 2, P)
    w2.add(0, 130.0, 1.0, NOW)
    w2.add(0, 200.0, 1.0, NOW)  # closes slot 2
    assert w2.add(1, 100.0, 1.0, NOW) == REJECT_LATE  # feature 1's first reading, slot 1


def test_view_is_contiguous_and_wraps_correctly_many_times() -> None:
    w = Window(3, 5, P)
    for i in range(1, 23):
        feed(w, [(i * P, [i, -i, 2 * i])])
    v = w.view()
    assert v.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(v[:, 0], np.arange(17, 22))  # slot 22 still open
    np.testing.assert_array_equal(v[:, 1], -np.arange(17, 22))


@pytest.mark.parametrize("bad", [{"n_features": 0}, {"length": 0}, {"period_s": 0.0}])
def test_invalid_shape_is_an_error(bad: dict[str, float]) -> None:
    args = {"n_features": 1, "length": 2, "period_s": 1.0, **bad}
    with pytest.raises(ValueError):
        Window(int(args["n_features"]), int(args["length"]), args["period_s"])


def test_snapshot_round_trip_continues_exactly() -> None:
    a = Window(2, 4, P)
    b = Window(2, 4, P)
    rows = [(i * P, [float(i), float(-i)]) for i in range(3)]
    feed(a, rows)
    b.restore(a.snapshot())
    later = [(i * P, [float(i), float(-i)]) for i in range(3, 9)]
    feed(a, later)
    feed(b, later)
    np.testing.assert_array_equal(a.view(), b.view())
    assert (a.filled, a.closed_through) == (b.filled, b.closed_through)
    with pytest.raises(ValueError):
        Window(3, 4, P).restore(a.snapshot())  # another shape


def test_clock_jumps_back_and_forward_never_corrupt_the_window() -> None:
    """A Pi without RTC: readings stamped by the local clock, then NTP corrects it."""
    w = Window(1, 3, P, max_gap_s=2 * P)
    boot = 60.0 * 1000  # the clock a Pi boots with
    for i in range(4):
        assert w.add(0, boot + i * P, float(i), now=boot + i * P) >= 0
    assert w.ready
    before = w.view().copy()
    # NTP steps the clock back an hour: readings are older than what the window holds.
    back = boot - 3600
    assert w.add(0, back, 9.0, now=back) < 0
    np.testing.assert_array_equal(w.view(), before)  # untouched
    # ... and forward a day: a gap longer than max_gap_s empties the window cleanly.
    ahead = boot + 86400
    assert w.add(0, ahead, 5.0, now=ahead) >= 0
    assert w.gaps == 1 and not w.ready
    for i in range(1, 4):
        w.add(0, ahead + i * P, 5.0 + i, now=ahead + i * P)
    np.testing.assert_array_equal(w.view()[:, 0], [5.0, 6.0, 7.0])
    # A reading from far ahead of the (new) clock is refused.
    assert w.add(0, ahead + 10 * 86400, 1.0, now=ahead + 4 * P) < 0


def test_values_beyond_float32_are_rejected_and_never_become_inf() -> None:
    """1e300 is a finite double but infinite as float32, the window's and the model's type."""
    w = Window(1, 2, P)
    for bad in (1e300, -1e39, 3.5e38, -3.5e38):
        result = w.add(0, 10.0, bad, NOW)
        assert result < 0 and REASONS[result] == "out_of_range", bad
    assert w.add(0, 10.0, 3.4e38, NOW) == 0  # the largest float32s are fine
    assert w.add(0, 70.0, -3.4e38, NOW) == 1
    assert w.add(0, 130.0, 1.0, NOW) == 1
    assert np.isfinite(w.view()).all()
    np.testing.assert_allclose(w.view()[:, 0], [3.4e38, -3.4e38], rtol=1e-6)


def test_timestamps_before_2000_are_rejected_as_too_old() -> None:
    year_2000 = 946684800.0  # 2000-01-01T00:00:00Z
    w = Window(1, 2, P, min_ts=year_2000)
    for ts in (-5.0, 0.0, 60.0 * 1000, year_2000 - 0.001):
        result = w.add(0, ts, 1.0, NOW)
        assert result < 0 and REASONS[result] == "too_old", ts
    assert w.add(0, year_2000, 1.0, NOW) == 0
    assert w.add(0, year_2000 + P, 2.0, NOW) == 1
    # Rejected before the order check: a stale reading does not count as "out of order".
    assert REASONS[w.add(0, -5.0, 1.0, NOW)] == "too_old"


@pytest.mark.parametrize("key", ["max_gap_s", "close_delay_s", "max_future_s"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_settings_are_a_value_error_not_an_overflow(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=key):
        Window(1, 2, P, **{key: value})
