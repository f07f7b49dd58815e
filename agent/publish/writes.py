"""Waiting for the broker's socket, and writing a loop turn's publishes to it together.

paho-mqtt driven from our loop writes each message as it is queued: one ``send()`` per
publish, and on a TCP connection one segment (and one wake-up of the broker) per message.
When a turn publishes many forecasts (streams sharing a tick), :class:`WriteBatch` has paho
queue them instead (paho's public ``on_socket_register_write`` hook: with one set, paho
leaves writing to the event loop) and writes them in one ``loop_write()`` at the end, with
``TCP_CORK`` on the socket meanwhile (Linux), so the kernel sends them as few full segments.
What is queued, in what order, with which QoS is unchanged; only when it is written.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any, Optional

import paho.mqtt.client as paho

__all__ = ["WriteBatch", "wait"]

#: Linux's TCP_CORK; None elsewhere (the writes are still deferred to one loop_write()).
CORK: Optional[int] = getattr(socket, "TCP_CORK", None)


def _hold(_client: paho.Client, _userdata: Any, _sock: Any) -> None:
    """paho's ``on_socket_register_write``: nothing to register, the batch writes at its end."""


def _cork(sock: Any, on: int) -> bool:
    """Set TCP_CORK on ``sock``; False where there is none (not Linux, not TCP)."""
    if CORK is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, CORK, on)
    except (OSError, AttributeError, ValueError):
        return False
    return True


class WriteBatch:
    """``with WriteBatch(client):`` paho's writes of the publishes made inside are held and
    written together on leaving (as far as the socket takes them; the rest when it is
    writable again, as before). Main loop only; not re-entrant."""

    def __init__(self, client: paho.Client) -> None:
        self._client = client
        self._corked: Any = None  # the socket corked, if any
        self._cork = True

    def __call__(self, many: bool) -> WriteBatch:
        """The batch for the next ``with``: ``many`` False (one message) leaves the socket
        uncorked, two system calls fewer for nothing to gather."""
        self._cork = many
        return self

    def __enter__(self) -> WriteBatch:
        client = self._client
        client.on_socket_register_write = _hold
        sock = client.socket()
        if self._cork and sock is not None and _cork(sock, 1):
            self._corked = sock
        return self

    def __exit__(self, *_exc: object) -> None:
        client = self._client
        client.on_socket_register_write = None
        try:
            if client.socket() is not None and client.want_write():
                client.loop_write()
        finally:
            corked, self._corked = self._corked, None
            if corked is not None:
                _cork(corked, 0)  # sends what is held now (a closed socket: nothing to send)


def wait(client: paho.Client, extra: Optional[socket.socket], timeout: float) -> list[Any]:
    """Up to ``timeout`` s for ``client``'s socket or ``extra``: the readable ones."""
    sock = client.socket()
    rlist: list[Any] = [] if extra is None else [extra]
    wlist: list[Any] = []
    if sock is not None:
        rlist.append(sock)
        if client.want_write():
            wlist.append(sock)
    if rlist or wlist:
        try:
            return select.select(rlist, wlist, [], timeout)[0]
        except (OSError, ValueError):  # the socket closed under us: next turn reconnects
            return []
    if timeout > 0:
        time.sleep(timeout)
    return []
