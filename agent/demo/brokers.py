"""The demo's MQTT broker: the system's Mosquitto when installed, else amqtt in a thread.

Just enough to run the demo on a machine with no broker set up: anonymous, loopback only, a
free port, nothing kept. The test suite has its own, configurable brokers (tests/support).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional, Union

from sensorcast.agent.errors import SensorcastError

__all__ = [
    "DemoBroker",
    "EmbeddedBroker",
    "SystemMosquitto",
    "find_mosquitto",
    "free_port",
    "pick_broker",
    "wait_port",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout_s: float) -> bool:
    """True once something accepts connections on 127.0.0.1:``port`` (within ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def find_mosquitto() -> Optional[str]:
    """Path of the system's mosquitto, if installed (it lives in /usr/sbin on Debian)."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )


class SystemMosquitto:
    """The system's ``mosquitto`` on a free loopback port: anonymous, no persistence."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="sensorcast-demo-mosquitto-")
        self._log = Path(self._dir.name) / "mosquitto.log"
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def description(self) -> str:
        """``system Mosquitto VERSION (PATH)``, for the demo's first line."""
        out = subprocess.run([self.binary, "-h"], capture_output=True, text=True, check=False)
        first = (out.stdout or out.stderr).splitlines()[:1]
        version = first[0].split(" version ")[-1].strip() if first else "?"
        return f"system Mosquitto {version} ({self.binary})"

    def start(self) -> None:
        """Start it; raises :class:`SensorcastError` with its last log lines if it does not
        listen within 10 s."""
        conf = Path(self._dir.name) / "mosquitto.conf"
        # Started as root, mosquitto switches to the user 'mosquitto', which may not exist.
        user = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        conf.write_text(
            f"{user}listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        if not wait_port(self.port, 10):
            tail = self._log.read_text(errors="replace").strip().splitlines()[-3:]
            self.close()
            raise SensorcastError(
                f"mosquitto did not start on port {self.port}: {' | '.join(tail)}"
            )

    def close(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s) and remove its files."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self._dir.cleanup()


class EmbeddedBroker:
    """amqtt's pure-Python broker in a background thread (for machines without Mosquitto)."""

    def __init__(self, why: str = "") -> None:
        self.port = free_port()
        self.description = f"embedded amqtt broker{why}"
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None

    def start(self) -> None:
        """Start it; raises :class:`SensorcastError` if amqtt is missing or does not listen."""
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise SensorcastError(
                "no MQTT broker: install Mosquitto (sudo apt-get install mosquitto) "
                "or the embedded one (pip install 'sensorcast[demo]')"
            ) from exc
        for noisy in ("amqtt", "transitions"):  # chatty at INFO; our port probe looks like an error
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        self._thread = threading.Thread(
            target=self._serve, args=(Broker, config), name="amqtt-broker", daemon=True
        )
        self._thread.start()
        self._ready.wait(15)
        if self._error is not None or not wait_port(self.port, 10):
            raise SensorcastError(f"the embedded broker did not start ({self._error})")

    def _serve(self, broker_class: Any, config: dict[str, Any]) -> None:
        """The broker thread: its own event loop until :meth:`close` stops it."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop

        async def create() -> Any:
            broker = broker_class(config)
            await broker.start()
            return broker

        try:
            broker = loop.run_until_complete(create())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(broker.shutdown())
        loop.close()

    def close(self) -> None:
        """Stop the broker and wait (up to 10 s) for its thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


DemoBroker = Union[SystemMosquitto, EmbeddedBroker]


def pick_broker(kind: str) -> DemoBroker:
    """The broker for ``sensorcast demo --broker KIND`` (``auto``, ``mosquitto``, ``embedded``):
    the system's Mosquitto when installed, unless ``embedded`` is asked for."""
    binary = find_mosquitto()
    if kind == "mosquitto" and binary is None:
        raise SensorcastError(
            "--broker mosquitto: mosquitto is not installed (apt-get install mosquitto)"
        )
    if binary is not None and kind != "embedded":
        return SystemMosquitto(binary)
    return EmbeddedBroker(why=" (no system Mosquitto found)" if binary is None else "")
