"""MQTT brokers for tests (and benches): the system's Mosquitto with any config, and amqtt,
a broker that speaks only MQTT 3.1.1, each in a process of its own on a free loopback port.

Both are context managers: ``with MosquittoBroker(find_mosquitto(), conf=...) as broker:``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from sensorcast.agent.demo.brokers import find_mosquitto, free_port, wait_port

from tests.support.host import missing_tool
from tests.support.managed import Managed

__all__ = [
    "AmqttBroker",
    "MosquittoBroker",
    "find_mosquitto",
    "free_port",
    "run_amqtt",
    "run_mosquitto",
    "wait_port",
]


def _stop(proc: Optional[subprocess.Popen[bytes]], timeout_s: float = 5) -> None:
    """SIGTERM, then SIGKILL if ``proc`` is still running ``timeout_s`` seconds later."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class MosquittoBroker(Managed):
    """The system's ``mosquitto`` on a loopback port (a free one unless ``port`` is given).

    ``conf`` replaces the default config (an anonymous listener); ``{port}`` in it is filled
    in, and ``persistence false`` added unless it sets persistence itself. :meth:`stop` and
    :meth:`start` again restart it on the same port (an outage); its output is in ``log``.
    """

    def __init__(self, binary: str, port: Optional[int] = None, conf: Optional[str] = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="sensorcast-mosquitto-")
        self.conf = Path(self._dir.name) / "mosquitto.conf"
        body = conf or "listener {port} 127.0.0.1\nallow_anonymous true\n"
        # Started as root, mosquitto drops to the 'mosquitto' user, which cannot read files in
        # our private temporary directories (certificates, password files): keep the user.
        user = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        if "persistence " not in body:
            body += "persistence false\n"
        self.conf.write_text(user + body.format(port=self.port))
        self.log = Path(self._dir.name) / "mosquitto.log"
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @staticmethod
    def find() -> Optional[str]:
        """Path of the system's mosquitto, if installed: :func:`find_mosquitto`."""
        return find_mosquitto()

    @property
    def description(self) -> str:
        """``system Mosquitto VERSION (PATH)``."""
        out = subprocess.run([self.binary, "-h"], capture_output=True, text=True, check=False)
        first = (out.stdout or out.stderr).splitlines()[:1]
        version = first[0].split(" version ")[-1].strip() if first else "?"
        return f"system Mosquitto {version} ({self.binary})"

    def start(self) -> None:
        """Start it (again); raises RuntimeError with its last log lines if it does not
        listen within 10 s. The log is appended to across restarts."""
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        if not wait_port(self.port, 10):
            self.stop()
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"mosquitto did not start on port {self.port}: {' | '.join(tail)}")

    def stop(self) -> None:
        """Stop it; :meth:`start` brings it back on the same port."""
        _stop(self._proc)
        self._proc = None

    def close(self) -> None:
        """Stop it and remove its config and log."""
        self.stop()
        self._dir.cleanup()

    begin = start  #: what ``with`` starts (:class:`~tests.support.managed.Managed`)


def run_mosquitto(conf: Optional[str] = None) -> Iterator[MosquittoBroker]:
    """A started system mosquitto (``conf`` as for :class:`MosquittoBroker`), closed after;
    for fixtures to ``yield from``. Fails (CI) or skips when mosquitto is not installed."""
    binary = find_mosquitto()
    if binary is None:
        missing_tool("mosquitto is not installed: apt-get install mosquitto")
    with MosquittoBroker(binary, conf=conf) as broker:
        yield broker


class AmqttBroker(Managed):
    """amqtt (the ``demo`` extra; MQTT 3.1.1 only), anonymous, in a process of its own."""

    def __init__(self, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="sensorcast-amqtt-")
        self.conf = Path(self._dir.name) / "amqtt.yaml"
        self.conf.write_text(  # YAML is a superset of JSON
            json.dumps({
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            })
        )  # fmt: skip
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @staticmethod
    def find() -> Optional[str]:
        """Path of the ``amqtt`` command installed next to this Python, if it is."""
        binary = Path(sys.executable).parent / "amqtt"
        return str(binary) if binary.exists() else None

    def start(self) -> None:
        """Start it; raises RuntimeError if amqtt is missing or does not listen within 20 s."""
        binary = self.find()
        if binary is None:
            raise RuntimeError("amqtt is not installed: pip install 'sensorcast[demo]'")
        self._proc = subprocess.Popen(
            [binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_port(self.port, 20):
            self.close()
            raise RuntimeError(f"amqtt did not start on port {self.port}")

    def close(self) -> None:
        """Stop it (SIGTERM, SIGKILL after 10 s) and remove its config."""
        _stop(self._proc, 10)
        self._proc = None
        self._dir.cleanup()

    begin = start  #: what ``with`` starts (:class:`~tests.support.managed.Managed`)


def run_amqtt() -> Iterator[AmqttBroker]:
    """A started amqtt, closed after; for fixtures to ``yield from``. Fails (CI) or skips when
    amqtt is not installed."""
    if AmqttBroker.find() is None:
        missing_tool("amqtt is not installed: pip install 'sensorcast[demo]'")
    with AmqttBroker() as broker:
        yield broker
