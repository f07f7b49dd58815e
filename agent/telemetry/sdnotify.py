"""systemd's notify protocol: READY=1, STATUS=..., WATCHDOG=1, STOPPING=1.

The protocol is one datagram per message to the unix socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract name starting with ``@``); see
sd_notify(3). It is a few lines, so it is written here rather than pulling in
``systemd-python`` (needs libsystemd headers to build) or ``sdnotify`` (not
maintained). Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Optional

__all__ = ["Notifier"]

logger = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to systemd; owned by the agent's main loop."""

    def __init__(self, environ: Optional[dict[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: Optional[str] = None
        if address.startswith("@"):
            self._address = "\0" + address[1:]
        elif address.startswith("/"):
            self._address = address
        self._sock: Optional[socket.socket] = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        #: Seconds between watchdog pings, or None when systemd expects none.
        self.watchdog_s: Optional[float] = None
        #: Seconds after a ping by which the next one must go (half the timeout), or None.
        self.watchdog_latest_s: Optional[float] = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6 / 3  # ping at a third of the timeout
            self.watchdog_latest_s = int(usec) / 1e6 / 2  # and no later than at half of it
        self._next_ping = 0.0
        self._status = ""
        self._failed = False

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self._sock is not None

    def send(self, *fields: str) -> None:
        """Send ``KEY=value`` fields in one datagram; failures are logged once."""
        if self._sock is None or self._address is None:
            return
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                logger.warning("cannot notify systemd: %s", exc)

    def ready(self, status: str) -> None:
        """The agent is connected and its models are loaded."""
        self._status = status
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        """A one-line status for ``systemctl status``; sent only when it changes."""
        if status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    def progress(self, monotonic_now: Optional[float] = None) -> None:
        """Called by the main loop on every turn: pings the watchdog when one is due.

        Only the main loop calls this, so a stuck loop stops the pings and systemd
        restarts the agent after ``WatchdogSec``.
        """
        if self.watchdog_s is None:
            return
        now = time.monotonic() if monotonic_now is None else monotonic_now
        if now >= self._next_ping:
            self._next_ping = now + self.watchdog_s
            self.send("WATCHDOG=1")

    def next_due(self) -> float:
        """Monotonic time by which the loop must turn for the watchdog's next ping (half
        its timeout after the last one); infinity without a watchdog."""
        if self.watchdog_s is None or self.watchdog_latest_s is None:
            return math.inf
        return self._next_ping - self.watchdog_s + self.watchdog_latest_s

    def stopping(self) -> None:
        """The agent is shutting down."""
        self.send("STOPPING=1", "STATUS=shutting down")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
