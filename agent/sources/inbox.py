"""The hand-over between source threads and the main loop: a queue, a wake socket, and load
shedding.

Sources in their own threads (files, commands, stdin) and the MQTT handlers (which run in
the loop's own turn) put reading batches here; the loop drains them. Other threads wake the
loop's ``select`` by writing a byte to a socket pair. When the loop falls behind (a flood),
new batches are dropped before they are parsed or queued, so memory stays bounded; what is
dropped is counted in :attr:`Inbox.shed`.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from typing import Callable, Optional

from sensorcast.agent.sources.base import Reading

__all__ = ["MAX_QUEUED", "Inbox"]

MAX_QUEUED = 20_000  #: Reading batches waiting for the loop before sources shed load.


class Inbox:
    """A queue of reading batches for the loop that creates it, and its wake socket pair.

    Create it in the loop's thread: a batch handed over from that thread needs no wake.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[list[Reading]] = queue.SimpleQueue()
        self.shed = 0  #: Reading batches (or MQTT messages) dropped because the loop was behind.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.loop_thread = threading.get_ident()  #: The thread that drains the queue.

    @property
    def wake_socket(self) -> socket.socket:
        """Readable when another thread woke the loop: give it to the loop's ``select``."""
        return self._wake_r

    def accepting(self) -> bool:
        """MQTT messages' gate: shed before parsing when the loop is behind."""
        if self._queue.qsize() >= MAX_QUEUED:
            self.shed += 1
            return False
        return True

    def hand_over(self, batch: list[Reading]) -> None:
        """Sources' sink (any thread): queue a batch, or shed it when the loop is behind."""
        if self._queue.qsize() >= MAX_QUEUED:
            self.shed += 1
            return
        self._queue.put(batch)
        if threading.get_ident() != self.loop_thread:
            self.wake()

    def nudge(self) -> None:
        """Make the loop's next turn start at once, with nothing to read (any thread, and
        signal handlers): an empty batch is queued, so its wait does not block."""
        self._queue.put([])
        self.wake()

    def wake(self) -> None:
        """Make the loop's wait return (any thread, and signal handlers)."""
        # Full: the loop wakes anyway. Closed: shutting down.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def woken(self) -> None:
        """The loop's wait returned for the wake socket: read what the wakers wrote."""
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass  # drained

    def empty(self) -> bool:
        """No batch is waiting."""
        return self._queue.empty()

    def drain(
        self, ingest: Callable[[list[Reading], float], None], now: float, limit: Optional[int]
    ) -> None:
        """Hand up to ``limit`` batches (all, if None) to ``ingest(batch, now)``, oldest first;
        ``now`` is the Unix time (s) they count as arrived."""
        count = 0
        get, empty = self._queue.get_nowait, self._queue.empty
        # The loop is the only consumer: a queue that is not empty gives a batch. Asking
        # empty() costs a third of the queue.Empty raised and caught on every turn.
        while (limit is None or count < limit) and not empty():
            ingest(get(), now)
            count += 1

    def close(self) -> None:
        """Close the wake sockets (a late wake is then ignored)."""
        self._wake_r.close()
        self._wake_w.close()
