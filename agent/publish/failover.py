"""Which broker of ``mqtt.url`` the MQTT link tries next, and how long it waits first.

A list of brokers (a cluster behind several addresses) is tried in order: at start until
one accepts; after a lost connection the current broker first, then the next one after
each failed attempt (refused TCP, TLS failure, no CONNACK in time, a refusing CONNACK),
wrapping around. The capped exponential backoff of ``mqtt.reconnect_min_s`` /
``reconnect_max_s`` comes after a whole round failed, not between the brokers of a round:
a cluster node that is down costs one failed connect, not a backoff delay. With one broker
every round is one attempt, which is the plain reconnect-with-backoff of a single URL.

Pure bookkeeping (no I/O, no clock): :class:`~sensorcast.agent.publish.link.MqttLink`
asks it and does the connecting.
"""

from __future__ import annotations

import logging
from typing import Optional

from sensorcast.agent.config import MqttConfig
from sensorcast.agent.config.mqtt import host_port

__all__ = ["Rotation", "brokers_of"]

logger = logging.getLogger(__name__)


def brokers_of(cfg: MqttConfig) -> tuple[tuple[str, int], ...]:
    """Every broker of ``cfg`` as ``(host, port)``, in the order they are tried (one for a
    single URL: ``cfg.brokers`` is empty then)."""
    return cfg.brokers or ((cfg.host, cfg.port),)


class Rotation:
    """The brokers in their order, the current one, and the reconnect backoff."""

    def __init__(self, cfg: MqttConfig) -> None:
        self.brokers = brokers_of(cfg)
        self._min_s = cfg.reconnect_min_s
        self._max_s = cfg.reconnect_max_s
        self.index = 0  #: The current broker: the one connected to, or tried next.
        self.delay_s = cfg.reconnect_min_s  #: Wait after the next lost connection or round.
        self.failovers = 0  #: Connections to another broker than the one before, since start.
        self._failed = 0  # failed attempts in this round
        self._last: Optional[int] = None  # the broker of the last connection

    @property
    def current(self) -> tuple[str, int]:
        """``(host, port)`` of the current broker."""
        return self.brokers[self.index]

    @property
    def name(self) -> str:
        """The current broker as ``host:port``."""
        return host_port(*self.current)

    @property
    def where(self) -> str:
        """``MQTT broker host:port (2 of 3)`` (without the count for a single broker): the
        current broker in log lines and errors."""
        many = len(self.brokers) > 1
        position = f" ({self.index + 1} of {len(self.brokers)})" if many else ""
        return f"MQTT broker {self.name}{position}"

    def connected(self) -> bool:
        """The current broker accepted: the backoff starts over. True if that is a failover
        (another broker than the last connection's; the first connection is none)."""
        moved = self._last is not None and self._last != self.index
        self.failovers += moved
        self._last = self.index
        self._failed = 0
        self.delay_s = self._min_s
        return moved

    def lost(self) -> float:
        """The connection was lost: seconds to wait before trying the current broker again
        (a new round starts there)."""
        self._failed = 0
        return self._backoff()

    def failed(self, why: str = "", level: int = logging.DEBUG) -> float:
        """An attempt on the current broker failed (``why``, logged at ``level``; at least a
        warning when that moves on to another broker): move on to the next one. Returns
        the seconds to wait before trying it: none within a round, the backoff after one."""
        self.index = (self.index + 1) % len(self.brokers)
        self._failed += 1
        wait = 0.0
        if self._failed >= len(self.brokers):
            self._failed = 0
            wait = self._backoff()
        if why and len(self.brokers) > 1:
            why += f"; trying {self.where}" + (f" in {wait:g} s" if wait else "")
            level = max(level, logging.WARNING)
        if why:
            logger.log(level, "%s", why)
        return wait

    def _backoff(self) -> float:
        wait = self.delay_s
        self.delay_s = min(self.delay_s * 2, self._max_s)
        return wait
