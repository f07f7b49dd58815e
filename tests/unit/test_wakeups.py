"""When the idle loop must wake: a window's open slot closing, a detector's dropout clock."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Optional

from sensorcast.agent.telemetry.anomaly import AnomalyDetector
from sensorcast.agent.wakeups import SLACK_S, SOON_S, close_at, dropout_at
from sensorcast.agent.window import Window

T0 = 1_700_001_000.0  # a slot boundary for periods of 300 s down to 0.1 s


def _window(period: float = 60.0, delay: float = 2.0) -> Window:
    return Window(2, 4, period, close_delay_s=delay)


def test_no_open_slot_needs_no_wakeup() -> None:
    w = _window()
    assert close_at(w, T0) is None
    w.add(0, T0 + 1, 1.0, T0 + 1)
    assert w.close_due(T0 + 62) == 1 or w.closed_through is not None
    assert close_at(w, T0 + 62) is None


def test_open_slot_closes_exactly_when_the_window_says() -> None:
    for period, delay in ((60.0, 2.0), (0.2, 0.05), (0.1, 0.05), (300.0, 2.0)):
        w = _window(period, delay)
        ts = T0 + 7.3 * period
        w.add(0, ts, 1.0, ts)
        at = close_at(w, ts)
        assert at is not None and at > ts
        assert w.closing_due(at) and not w.closing_due(math.nextafter(at, -math.inf))


def test_a_due_slot_is_due_now() -> None:
    w = _window()
    w.add(0, T0 + 1, 1.0, T0 + 1)
    assert close_at(w, T0 + 100) == T0 + 100


def test_a_slot_ahead_of_the_clock_is_never_answered_late() -> None:
    w = _window(period=60.0)
    w.add(0, T0 + 110, 1.0, T0)  # stamped almost two periods ahead (max_future_s 120)
    at = close_at(w, T0)
    assert at is not None and T0 < at <= T0 + 122
    assert w.closing_due(T0 + 122) and not w.closing_due(T0 + 121.9)


def _stream(detector: Optional[AnomalyDetector], window: Window) -> Any:
    return SimpleNamespace(anomaly=detector, window=window)


def test_no_detector_or_no_closed_period_needs_no_dropout_wakeup() -> None:
    w = _window(10.0, 1.0)
    assert dropout_at(_stream(None, w), T0) is None
    assert dropout_at(_stream(AnomalyDetector("s", [("x", 0)]), w), T0) is None


def test_dropout_wakeup_is_when_the_detector_finds_it() -> None:
    """The loop, woken only when :func:`dropout_at` says, raises the dropout at the same
    turn a 0.1 s tick would have: the period after the last one due without a reading."""
    period, delay = 10.0, 1.0
    det = AnomalyDetector("s", [("x", 0)], dropout_periods=2)
    w = _window(period, delay)
    for k in range(3):
        w.add(0, T0 + k * period + 1, 20.0, T0 + k * period + 1)
    now = T0 + 2 * period + 2
    assert w.closed_through is not None
    assert dropout_at(_stream(det, w), now) == now + SOON_S  # its clock not started yet
    assert det.idle(w, now) == []  # starts it
    wakes = []
    while True:
        at = dropout_at(_stream(det, w), now)
        assert at is not None and at > now
        now = at
        wakes.append(now)
        if det.idle(w, now):
            break
        assert not det.idle(w, now - 2 * SLACK_S) and len(wakes) < 5
    assert len(wakes) == 2  # one wakeup per period, not one per tick
    assert dropout_at(_stream(det, w), now) is None  # in dropout: nothing more by the clock
