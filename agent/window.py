"""Rolling windows on a model's period grid.

Readings arrive whenever sensors send them; a model wants one row per
period. A :class:`Window` resamples each stream onto the grid of slots
``[k * period, (k + 1) * period)``, labelled by their start time, and keeps the
last ``length`` rows in a preallocated ring.

Resampling policy (per stream, documented in the README):

* ``mean``: a slot's value for a feature is the mean of that feature's
  readings in the slot; ``last`` takes the latest one.
* A slot closes when a reading for a later slot arrives, or ``close_delay_s``
  after its end by the wall clock (so a forecast does not wait a whole period
  for the next reading).
* A slot with no reading for a feature carries that feature's last value
  forward while the gap since its last reading is at most ``max_gap_s``;
  beyond that the window is emptied (a *gap*) instead of inventing data.
* A reading within 0.01 % of a period before a slot boundary counts for the
  next slot, so float rounding in timestamps cannot shift rows.
* Features computed from time (a bundle's ``computed`` calendar features) are not read:
  each row gets them for its slot's start when it is appended, so they are never stale.
* Readings that are not finite, beyond float32 range (the window and the
  model hold float32: ``1e300`` would become infinity), stamped before
  :data:`MIN_TS` (2000-01-01) or too far in the future, duplicate, out of
  order or for an already closed slot are rejected with a reason code.

Appending is O(1) and allocation-free: the ring is stored twice over
(``2 * length`` rows), so the window is always one contiguous view.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
from sensorcast.agent.forecast.timefeatures import TIME_KINDS, TIME_PERIODS_S

__all__ = [
    "FLOAT32_MAX",
    "MIN_TS",
    "REASONS",
    "REJECT_DUPLICATE",
    "REJECT_FUTURE",
    "REJECT_LATE",
    "REJECT_NONFINITE",
    "REJECT_OUT_OF_ORDER",
    "REJECT_OUT_OF_RANGE",
    "REJECT_TOO_OLD",
    "Window",
]

REJECT_NONFINITE = -1
REJECT_FUTURE = -2
REJECT_DUPLICATE = -3
REJECT_OUT_OF_ORDER = -4
REJECT_LATE = -5
REJECT_OUT_OF_RANGE = -6
REJECT_TOO_OLD = -7

#: Largest float32 magnitude: the window's rows and the model's input are float32, so a
#: larger value (finite as a double) would turn into infinity there.
FLOAT32_MAX = float(np.finfo(np.float32).max)

#: Earliest timestamp the agent accepts, Unix seconds (2000-01-01T00:00:00Z). Anything
#: before it is a clock that was never set (a Pi without RTC boots in 1970) or a garbage
#: ``ts``; forecasts stamped from it would be wrong.
MIN_TS = 946684800.0

#: A reading this fraction of a period before a slot boundary counts for the next slot.
SLOT_TOLERANCE = 1e-4

#: Reason names by reject code, as counted and logged.
REASONS = {
    REJECT_NONFINITE: "non_finite",
    REJECT_FUTURE: "future",
    REJECT_DUPLICATE: "duplicate",
    REJECT_OUT_OF_ORDER: "out_of_order",
    REJECT_LATE: "late",
    REJECT_OUT_OF_RANGE: "out_of_range",
    REJECT_TOO_OLD: "too_old",
}


#: ``last_slot`` of a feature never seen: older than any gap allows.
NEVER = -(2**62)

_isfinite = math.isfinite
_floor = math.floor
_NUMBERS = itertools.count()  # each window's block of row numbers (``Window.appended``)


def _json_float(value: float) -> Optional[float]:
    """JSON has no NaN or infinity: store them as None (read back by numpy as NaN)."""
    return value if math.isfinite(value) else None


class Window:
    """The last ``length`` resampled rows of one stream's ``n_features`` features."""

    def __init__(
        self,
        n_features: int,
        length: int,
        period_s: float,
        *,
        max_gap_s: Optional[float] = None,
        resample: str = "mean",
        close_delay_s: Optional[float] = None,
        max_future_s: Optional[float] = None,
        min_ts: Optional[float] = None,
        computed: Sequence[tuple[int, str]] = (),
    ) -> None:
        if n_features < 1 or length < 1 or not period_s > 0:
            raise ValueError("n_features, length and period_s must be positive")
        if resample not in ("mean", "last"):
            raise ValueError("resample must be 'mean' or 'last'")
        if not all(0 <= c < n_features and kind in TIME_KINDS for c, kind in computed):
            raise ValueError(f"computed columns need an index and one of {', '.join(TIME_KINDS)}")
        self.n_features = n_features
        self.length = length
        self.period_s = float(period_s)
        #: Longest time a feature's last value is carried forward, in seconds.
        self.max_gap_s = 3 * self.period_s if max_gap_s is None else float(max_gap_s)
        #: Wall-clock delay after a slot's end before it closes without a later reading (s).
        self.close_delay_s = (
            min(2.0, self.period_s / 2) if close_delay_s is None else float(close_delay_s)
        )
        #: How far ahead of the local clock a reading's timestamp may be (s).
        self.max_future_s = (
            max(60.0, 2 * self.period_s) if max_future_s is None else float(max_future_s)
        )
        #: Earliest timestamp accepted, Unix seconds; None: no lower bound. The agent
        #: passes :data:`MIN_TS`.
        self.min_ts = -math.inf if min_ts is None else float(min_ts)
        for name in ("max_gap_s", "close_delay_s", "max_future_s"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")
        self._mean = resample == "mean"
        self._rows = np.zeros((2 * length, n_features), dtype=np.float32)
        self._next = 0  # ring index the next row is written to
        self.filled = 0  # rows in the window, up to ``length``
        #: Rows written to the ring, numbered apart from every other window's (2**40 each):
        #: the view's newest row is number ``appended - 1`` (a restore skips ahead).
        self.appended = next(_NUMBERS) << 40
        self._open: Optional[int] = None  # slot being accumulated
        self.closed_through: Optional[int] = None  # last slot closed
        # Per-feature state in plain lists, not numpy arrays: a reading touches one element,
        # and a numpy scalar access costs several times a list's (the hot path is per reading).
        self._zeros = [0.0] * n_features
        self._izeros = [0] * n_features
        self._sum = [0.0] * n_features
        self._count = [0] * n_features
        self._last = [math.nan] * n_features
        self._last_slot = [NEVER] * n_features
        self._last_ts = [-math.inf] * n_features
        #: (column, period in s, sin?) of each feature computed from its slot's start time.
        self._computed = tuple(
            (c, TIME_PERIODS_S[kind.partition("_")[0]], kind.endswith("_sin"))
            for c, kind in computed
        )
        for c, _, _ in self._computed:
            self._last[c] = 0.0  # not NaN: a computed feature is known before any reading
        self._has_nan = True  # some feature's last value is still NaN (never seen)
        self._max_carry = math.floor(self.max_gap_s / self.period_s + 1e-9)
        #: Times the window was emptied because a gap exceeded ``max_gap_s``.
        self.gaps = 0

    @property
    def ready(self) -> bool:
        """True when the window holds ``length`` rows."""
        return self.filled >= self.length

    @property
    def end_slot(self) -> Optional[int]:
        """Slot index of the newest row, or None before the first row."""
        return self.closed_through if self.filled else None

    def last_reading_slot(self, feature: int) -> Optional[int]:
        """The newest closed slot that had a reading for ``feature`` (its column), or None
        if none has; a slot since with none carried the value forward (or emptied the
        window). Read-only: for the anomaly detector's stuck and dropout checks."""
        last = self._last_slot[feature]
        return None if last == NEVER else last

    def view(self) -> np.ndarray:
        """The window, oldest row first, as a ``(length, n_features)`` view (no copy); valid
        until the next append, only meaningful when :attr:`ready`."""
        return self._rows[self._next : self._next + self.length]

    def add(self, feature: int, ts: float, value: float, now: float) -> int:
        """Add one reading; return the number of rows appended, or a negative reject code.

        ``ts`` and ``now`` are Unix seconds; ``now`` is the local wall clock.
        """
        # One guard for the malformed readings, tested in the order of _invalid's reasons: an
        # accepted reading pays the same comparisons as before, and only a malformed one pays
        # the call that names the reason. Duplicates (a QoS 1 redelivery, a retained message
        # again after a reconnect) are common enough to keep their test inline.
        if (
            not _isfinite(value)
            or not _isfinite(ts)
            or value < -FLOAT32_MAX
            or value > FLOAT32_MAX
            or ts < self.min_ts
            or ts > now + self.max_future_s
        ):
            return self._invalid(ts, value)
        last_ts = self._last_ts[feature]
        if ts <= last_ts:
            return REJECT_DUPLICATE if ts == last_ts else REJECT_OUT_OF_ORDER
        # A hair of tolerance: timestamps made as start + i * period (period 0.1 s, say)
        # land a float rounding error short of their slot boundary.
        slot = _floor(ts / self.period_s + SLOT_TOLERANCE)
        closed = self.closed_through
        if closed is not None and slot <= closed:
            return REJECT_LATE
        opened = self._open
        appended = 0
        if opened is None:
            if closed is not None and slot > closed + 1:
                appended = self._fill_empty(closed + 1, slot - 1)
            self._open = slot
        elif slot > opened:
            appended = self._close(opened)
            if slot > opened + 1:
                appended += self._fill_empty(opened + 1, slot - 1)
            self._open = slot
        if self._mean:
            self._sum[feature] += value
            self._count[feature] += 1
        else:
            self._sum[feature] = value
            self._count[feature] = 1
        self._last_ts[feature] = ts
        return appended

    def _invalid(self, ts: float, value: float) -> int:
        """The reject code of a reading :meth:`add`'s guard refused: the first reason that
        holds (the guard's last one, too far in the future, when none of the others does)."""
        if not (_isfinite(value) and _isfinite(ts)):
            return REJECT_NONFINITE
        if not -FLOAT32_MAX <= value <= FLOAT32_MAX:
            return REJECT_OUT_OF_RANGE
        if ts < self.min_ts:
            return REJECT_TOO_OLD
        return REJECT_FUTURE

    def appends_before(self, ts: float) -> bool:
        """True if a reading at ``ts`` would close a slot (and move the window) when added."""
        if not math.isfinite(ts):
            return False
        slot = math.floor(ts / self.period_s + SLOT_TOLERANCE)
        if self._open is not None:
            return slot > self._open
        return self.closed_through is not None and slot > self.closed_through + 1

    def closing_due(self, now: float) -> bool:
        """True if :meth:`close_due` would close the open slot at wall-clock ``now``."""
        at = self.close_at()
        return at is not None and now >= at

    def close_at(self) -> Optional[float]:
        """Wall-clock time (Unix s) at which the open slot closes (None with none open):
        when the main loop must wake to close it (:mod:`..wakeups`)."""
        return None if self._open is None else (self._open + 1) * self.period_s + self.close_delay_s

    def close_due(self, now: float) -> int:
        """Close the open slot if the wall clock is ``close_delay_s`` past its end; returns
        the number of rows appended (0 or 1)."""
        if self._open is None or not self.closing_due(now):
            return 0
        appended = self._close(self._open)
        self._open = None
        return appended

    def snapshot(self) -> dict[str, Any]:
        """The window's whole state as JSON-able data (for a warm restart)."""
        rows = self._rows[self._next : self._next + self.length][self.length - self.filled :]
        return {
            "n_features": self.n_features,
            "length": self.length,
            "period_s": self.period_s,
            "rows": [[_json_float(v) for v in row] for row in rows.tolist()],
            "open": self._open,
            "closed_through": self.closed_through,
            "sum": [_json_float(v) for v in self._sum],
            "count": list(self._count),
            "last": [_json_float(v) for v in self._last],
            "last_slot": list(self._last_slot),
            "last_ts": [_json_float(v) for v in self._last_ts],
            "gaps": self.gaps,
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a :meth:`snapshot`; raises ``ValueError`` if it does not fit this window."""
        if (snap.get("n_features"), snap.get("length"), snap.get("period_s")) != (
            self.n_features,
            self.length,
            self.period_s,
        ):
            raise ValueError("snapshot is for another window shape or period")
        rows = np.asarray(snap["rows"], dtype=np.float64).reshape(-1, self.n_features)
        if len(rows) > self.length or not np.isfinite(rows).all():
            raise ValueError("snapshot rows are invalid")
        vectors = {
            key: np.asarray(snap[key], dtype=np.float64).reshape(self.n_features)
            for key in ("sum", "last", "last_ts")
        }
        count = np.asarray(snap["count"], dtype=np.int64).reshape(self.n_features)
        last_slot = np.asarray(snap["last_slot"], dtype=np.int64).reshape(self.n_features)
        opened, closed = snap["open"], snap["closed_through"]
        if not all(v is None or isinstance(v, int) for v in (opened, closed)):
            raise ValueError("snapshot slots are invalid")
        self.filled, self._next = 0, 0
        self.appended += 2 * self.length  # none of the rows is one checked before
        for row in rows:
            i = self._next
            self._rows[i] = row
            self._rows[i + self.length] = row
            self._next = (i + 1) % self.length
            self.filled += 1
        self._sum[:] = vectors["sum"].tolist()
        self._count[:] = count.tolist()
        self._last[:] = vectors["last"].tolist()
        self._last_slot[:] = last_slot.tolist()
        self._last_ts[:] = vectors["last_ts"].tolist()
        for c, _, _ in self._computed:
            self._last[c] = 0.0  # refilled for the next row's slot
        self._has_nan = any(math.isnan(v) for v in self._last)
        self._open, self.closed_through = opened, closed
        self.gaps = int(snap.get("gaps", 0))

    def reset(self) -> None:
        """Empty the window (the rows, not the per-feature history)."""
        self.filled = 0

    def _close(self, slot: int) -> int:
        """Turn the accumulated readings of ``slot`` into a row (carrying as allowed)."""
        counts = self._count
        if any(counts):
            sums, last, last_slot = self._sum, self._last, self._last_slot
            for f, c in enumerate(counts):
                if c:
                    last[f] = sums[f] / c
                    last_slot[f] = slot
            sums[:] = self._zeros
            counts[:] = self._izeros
            if self._has_nan:  # a mean of finite readings is never NaN
                self._has_nan = any(math.isnan(v) for v in last)
        self.closed_through = slot
        return self._append_carried(slot)

    def _fill_empty(self, first: int, last: int) -> int:
        """Close slots ``first..last`` that got no reading at all."""
        appended = 0
        if last - first + 1 > self._max_carry + 1:
            # Longer than any carry allows: skip straight to the end.
            first = last
        for slot in range(first, last + 1):
            self.closed_through = slot
            appended += self._append_carried(slot)
        return appended

    def _append_carried(self, slot: int) -> int:
        """Append ``_last`` as the row for ``slot`` unless a feature is stale."""
        if self._computed:
            self._fill_computed(slot)
        # The oldest feature decides: its age is the largest.
        if self._has_nan or (slot - min(self._last_slot)) * self.period_s > self.max_gap_s + 1e-9:
            if self.filled:
                self.gaps += 1
            self.filled = 0
            return 0
        i = self._next
        rows = self._rows
        rows[i] = self._last
        rows[i + self.length] = rows[i]
        self._next = (i + 1) % self.length
        self.appended += 1
        if self.filled < self.length:
            self.filled += 1
        return 1

    def _fill_computed(self, slot: int) -> None:
        """Set the computed features for ``slot``, from its start time, fresh as of it.

        Per slot, not per reading: a few ``math`` calls. The formula is
        :func:`~sensorcast.agent.forecast.timefeatures.time_feature`'s, inlined (it would
        parse the kind's name on each call).
        """
        t = slot * self.period_s
        last, last_slot = self._last, self._last_slot
        for c, period, is_sin in self._computed:
            angle = 2.0 * math.pi * (t / period)
            last[c] = math.sin(angle) if is_sin else math.cos(angle)
            last_slot[c] = slot  # a reading for it (a JSON key of that name) is overwritten
