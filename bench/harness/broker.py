"""The system's Mosquitto on a free loopback port, and a subscriber that collects messages.

The benchmarks own their broker configuration (the tests have theirs in ``tests/support``); the
port helpers are the agent's own (``sensorcast.agent.demo.brokers``), shipped code, not tests'.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import paho.mqtt.client as paho

__all__ = ["UNLIMITED", "Mosquitto", "free_port", "subscriber", "wait_port"]

#: Queues without bounds: the benchmarks measure the agent, not the broker's limits.
UNLIMITED = (
    "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
    "max_inflight_messages 0\n"
)


def free_port() -> int:
    """A free TCP port on the loopback (the agent's helper, imported when called: a child
    imports its tree's agent first, :func:`bench.agent.trees.use_tree`)."""
    from sensorcast.agent.demo.brokers import free_port as agents

    return agents()


def wait_port(port: int, timeout_s: float) -> bool:
    """True once ``port`` on the loopback accepts connections, within ``timeout_s`` (s)."""
    from sensorcast.agent.demo.brokers import wait_port as agents

    return agents(port, timeout_s)


class Mosquitto:
    """``mosquitto`` with ``conf`` (``{port}`` filled in) on a free port; stop/start for outages.

    Started as root, Mosquitto drops to its own user unless told otherwise, and could then not
    read a persistence directory in our private temporary directories: it keeps ours.
    """

    def __init__(self, conf: str = UNLIMITED, port: Optional[int] = None) -> None:
        self.binary = self.find()
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="sensorcast-bench-mosquitto-")
        body = conf.format(port=self.port)
        if "persistence " not in body:
            body += "persistence false\n"
        user = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        self.conf = Path(self._dir.name) / "mosquitto.conf"
        self.conf.write_text(user + body)
        self.log = Path(self._dir.name) / "mosquitto.log"
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @staticmethod
    def find() -> str:
        """The system's mosquitto (Debian installs it in /usr/sbin, often not on PATH)."""
        found = shutil.which("mosquitto")
        for path in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
            if found is None and os.access(path, os.X_OK):
                found = path
        if found is None:
            raise SystemExit("the benchmarks need Mosquitto (apt install mosquitto)")
        return found

    def version(self) -> str:
        """Mosquitto's first line of ``-h``, e.g. ``mosquitto version 2.0.11``."""
        out = subprocess.run([self.binary, "-h"], capture_output=True, text=True, check=False)
        first = (out.stdout or out.stderr).splitlines()[:1]
        return first[0] if first else "mosquitto ?"

    def start(self) -> None:
        """Start it and wait until it accepts connections (10 s at most)."""
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        if not wait_port(self.port, 10):
            self.stop()
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"mosquitto did not start on port {self.port}: {' | '.join(tail)}")

    def stop(self) -> None:
        """Stop it (the port and, with persistence, the store stay for :meth:`start`)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def close(self) -> None:
        """Stop it and remove its files."""
        self.stop()
        self._dir.cleanup()


def subscriber(port: int, topic: str) -> tuple[paho.Client, list[tuple[float, bytes]]]:
    """A client subscribed (QoS 1) to ``topic``, and the list its messages arrive in.

    Each message is ``(time.monotonic() on arrival, payload)``. The caller stops the client
    (``loop_stop``, ``disconnect``).
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[tuple[float, bytes]] = []
    client = paho.Client(CallbackAPIVersion.VERSION2)
    ready = threading.Event()

    def on_connect(c: paho.Client, *_: object) -> None:
        c.subscribe(topic, qos=1)

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        got.append((time.monotonic(), bytes(msg.payload)))

    client.on_connect = on_connect
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.wait(10)
    return client, got
