"""How long the main loop may sleep: until the earliest thing that falls due by the clock.

Readings, MQTT traffic, signals and other threads wake the loop through its sockets
(:meth:`~sensorcast.agent.publish.link.MqttLink.poll` selects on the broker's and the
inbox's wake socket), so the loop's wait only has to end in time for what the clock
alone brings due:

* a stream's open period, ``close_delay_s`` after its end (:meth:`Window.close_at`);
* the anomaly detector's dropout clock: a period that should have closed without a reading;
* acknowledged forecasts whose delete waits to be committed (``SYNC_S``);
* the MQTT link: a keepalive ping within ``keepalive_s``, reconnect attempts while down;
* what the caller adds: the loop's periodic jobs and the heartbeat (monotonic deadlines).

An idle agent (no readings) thus wakes for its periodic jobs only, not ten times a second.
The service asks only after a turn without readings (``BUSY_WAIT_S`` after one with them):
this costs about a microsecond per stream.
Everything here is an upper bound on the wait: waking early costs a turn, never a result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Optional

from sensorcast.agent.publish.link import MqttLink
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.publish.sender import SYNC_S, OutboxSender
from sensorcast.agent.streams import Stream
from sensorcast.agent.window import Window

__all__ = ["MAX_WAIT_S", "SLACK_S", "SOON_S", "Wakeups", "close_at", "dropout_at"]

MAX_WAIT_S = 60.0  #: The loop's longest wait, seconds, whatever else is due.
#: Added to a deadline computed on the wall clock, seconds, so the turn it wakes sees it due
#: (float rounding, a wall clock slewed against the monotonic one the wait runs on).
SLACK_S = 0.001
#: How soon a detector that has not yet seen its window's newest period gets a turn, seconds
#: (the fixed tick the loop had before: its dropout clock starts at that turn).
SOON_S = 0.1


def close_at(window: Window, now: float) -> Optional[float]:
    """Wall-clock time (Unix s) at which the window's open slot closes by the clock
    (:meth:`Window.close_at`), None with no slot open; ``now`` if it is due already."""
    at = window.close_at()
    return None if at is None else max(at, now)


def dropout_at(stream: Stream, now: float) -> Optional[float]:
    """Wall-clock time (Unix s) at which the stream's anomaly detector may next find a
    dropout (:meth:`AnomalyDetector.next_idle`), None without a detector or before the
    window closed a period. A detector that has not yet seen its window's newest closed
    slot (its clock starts at that turn) gets a turn :data:`SOON_S` from ``now``."""
    detector, window = stream.anomaly, stream.window
    if detector is None or window.closed_through is None:
        return None
    answer = detector.next_idle(window, now)
    if answer is None:
        return None
    return answer + SLACK_S if answer > now else now + SOON_S


class Wakeups:
    """The loop's wait (:meth:`wait`), from the streams, the link and the outbox."""

    def __init__(
        self, streams: Sequence[Stream], link: MqttLink, outbox: Outbox, sender: OutboxSender
    ) -> None:
        self.streams = streams
        self.link = link
        self.outbox = outbox
        self.sender = sender
        self._seen = (outbox.depth, sender.sent)  # at the last wait
        self._sync_at = -math.inf  # monotonic s: acknowledged deletes are committed by then

    def wait(self, due: float) -> float:
        """Seconds the loop may wait for its sockets before its next turn: until ``due``
        (monotonic s: the caller's earliest job) or anything here that comes due first."""
        mono = time.monotonic()
        earliest = min(due, mono + MAX_WAIT_S, self._link_due(mono), self._outbox_due(mono))
        wall = time.time()
        soonest = self._streams_due(wall)
        if soonest is not None:
            earliest = min(earliest, mono + (soonest - wall))
        return max(0.0, earliest - mono)

    def _streams_due(self, wall: float) -> Optional[float]:
        """The earliest period close or dropout check of the streams (wall clock, Unix s)."""
        soonest: Optional[float] = None
        for stream in self.streams:
            for at in (close_at(stream.window, wall), dropout_at(stream, wall)):
                if at is not None and (soonest is None or at < soonest):
                    soonest = at
        return None if soonest is None else soonest + SLACK_S

    def _link_due(self, mono: float) -> float:
        """A turn for paho's keepalive (a ping goes out once ``keepalive_s`` passed without
        traffic: a turn every quarter of it keeps the ping well within the broker's 1.5 x),
        or, while the link is down, for its next reconnect step (:meth:`MqttLink.next_due`)."""
        return self.link.next_due()

    def _outbox_due(self, mono: float) -> float:
        """After forecasts were queued or acknowledged, one turn ``SYNC_S`` later commits
        deletes that had nothing to ride along with (:meth:`Outbox.sync`)."""
        seen = (self.outbox.depth, self.sender.sent)
        if seen != self._seen:
            self._seen = seen
            self._sync_at = mono + SYNC_S + SLACK_S
        return self._sync_at if self._sync_at > mono else math.inf
