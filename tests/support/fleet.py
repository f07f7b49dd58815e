"""A fleet of real agents for tests: N ``sensorcast run`` processes on one broker, fed real-time
readings by one feeder, and a persistent subscriber that checks no forecast went missing.

    with AgentFleet(tmp_path, fast_bundle, port=broker.port, prefix=topic_prefix, count=3,
                    public_key=tmp_path / "update.pub") as fleet:
        log = ForecastLog(central.port, topic_prefix)          # or fleet.forecast_log()
        ...                                                     # roll something out
        assert log.gaps() == {}

Each device ``dev-NN`` has its own directory ``DIR/dev-NN`` (``agent.toml``, ``agent.log``,
``models/room.tflite``: a copy of the bundle it may replace, ``state/``), one stream ``room``
reading ``sensors/<prefix>/dev-NN/room`` (the prefix keeps tests on a shared broker apart),
quality reports and metrics every second (the rolling errors over the last 20 residuals a
step, 20 before a shadow is compared), QoS 1 and the default persistent session.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.agents import start_agent
from tests.support.configs import to_toml, topic_stream
from tests.support.managed import Managed
from tests.support.paths import DEMO_DIR

__all__ = ["AgentFleet", "Feeder", "ForecastLog", "device_ids"]

#: Seconds between two readings of one device (the ``fast_bundle``'s period).
PERIOD_S = 0.2


def device_ids(count: int) -> tuple[str, ...]:
    """``dev-00``, ``dev-01``... (two digits up to 100 devices, so they sort)."""
    return tuple(f"dev-{i:02d}" for i in range(count))


def _client(port: int, client_id: str, clean: bool = True) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


class Feeder:
    """One paho client publishing a reading to every device's input topic each ``period_s``:
    rows of ``examples/demo/room-30d.csv`` (each device from its own offset), ``ts`` = now."""

    def __init__(self, port: int, topics: Mapping[str, str], period_s: float = PERIOD_S) -> None:
        rows = np.loadtxt(DEMO_DIR / "room-30d.csv", delimiter=",", skiprows=1)[:, 1:]
        self._rows = rows
        self._topics = dict(topics)
        self._period = period_s
        self.sent = 0  #: Readings handed to paho.
        self._stop = threading.Event()
        self._client = _client(port, f"feed-{uuid.uuid4().hex[:8]}")
        self._thread = threading.Thread(target=self._run, name="fleet-feeder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = time.monotonic()
        step = 0
        while not self._stop.is_set():
            now = time.time()
            for i, topic in enumerate(self._topics.values()):
                t, h = self._rows[(step + 37 * i) % len(self._rows)]
                body = json.dumps({"ts": now, "temperature": float(t), "humidity": float(h)})
                self._client.publish(topic, body, qos=1)
                self.sent += 1
            step += 1
            # On the grid, not after it: a slow round does not stretch the data's period.
            tick += self._period
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.loop_stop()
        self._client.disconnect()


class ForecastLog:
    """A persistent QoS 1 subscriber (clean session off) on every device's ``room`` forecasts
    under ``prefix`` at ``port``; keeps each device's forecast ``seq`` and ``model`` in order
    of arrival (duplicates that QoS 1 may deliver included)."""

    def __init__(self, port: int, prefix: str, stream: str = "room") -> None:
        self._cond = threading.Condition()
        self._seqs: dict[str, list[int]] = {}
        self._models: dict[str, list[str]] = {}
        subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"log-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )  # fmt: skip
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{prefix}/+/{stream}/forecast", qos=1)
        self.client.loop_start()
        assert subscribed.wait(10), "forecast subscription not acknowledged"

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        body = json.loads(msg.payload)
        with self._cond:
            self._seqs.setdefault(body["device"], []).append(int(body["seq"]))
            self._models.setdefault(body["device"], []).append(str(body["model"]))
            self._cond.notify_all()

    def seqs(self) -> dict[str, list[int]]:
        """Each device's forecast ``seq`` numbers, in order of arrival."""
        with self._cond:
            return {d: list(s) for d, s in self._seqs.items()}

    def models(self) -> dict[str, list[str]]:
        """Each device's forecast ``model`` labels, in order of arrival."""
        with self._cond:
            return {d: list(m) for d, m in self._models.items()}

    def gaps(self) -> dict[str, list[int]]:
        """Per device, the ``seq`` numbers missing between its first and last one seen (only
        devices with a gap; ``{}``: nothing lost)."""
        out: dict[str, list[int]] = {}
        for device, seqs in self.seqs().items():
            missing = sorted(set(range(min(seqs), max(seqs) + 1)) - set(seqs))
            if missing:
                out[device] = missing
        return out

    def wait_for(self, predicate: Callable[[ForecastLog], bool], timeout: float = 30) -> bool:
        """Whether ``predicate(self)`` came true within ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout=timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class AgentFleet(Managed):
    """``count`` real agents on the broker at ``port`` (a context manager: starts them and the
    feeder, stops them all). ``site`` sets ``[device] site``; ``public_key`` (an Ed25519 PEM)
    sets ``[updates] public_key``, else ``allow_unsigned`` opens updates to unsigned bundles;
    ``tables`` add or override config tables (``quality={"min_samples": 5}``). Logs go to files
    (``log(dev)``), never to unread pipes. ``start_s``: seconds from the first process started
    to every device ``online`` on the broker (measured by :meth:`start_all`)."""

    def __init__(
        self,
        directory: Path,
        bundle: Path,
        *,
        port: int,
        prefix: str,
        count: int = 3,
        site: Optional[str] = None,
        public_key: Optional[Path] = None,
        allow_unsigned: bool = False,
        **tables: Mapping[str, Any],
    ) -> None:
        self.directory = directory
        self.port = port
        self.prefix = prefix
        self.devices = device_ids(count)
        self.start_s = 0.0
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._status: dict[str, str] = {}
        self._cond = threading.Condition()
        self._feeder: Optional[Feeder] = None
        updates: dict[str, Any] = {"allow_unsigned": allow_unsigned}
        if public_key is not None:
            updates = {"public_key": public_key}
        for dev in self.devices:
            home = directory / dev
            (home / "models").mkdir(parents=True)
            (home / "models" / "room.tflite").write_bytes(bundle.read_bytes())
            doc: dict[str, dict[str, Any]] = {
                "device": {"id": dev, "site": site},
                "mqtt": {"url": f"mqtt://127.0.0.1:{port}", "topic_prefix": prefix,
                         "reconnect_min_s": 0.5, "reconnect_max_s": 2.0},
                "state": {"dir": home / "state"},
                "homeassistant": {"enabled": False},
                "updates": updates,
                # samples = min_samples = 20: the live model's rolling MAE covers the last 20
                # residuals a step, and a shadow is judged once it has 20 too: the same
                # forecasts, so a short soak compares like with like. (With the default 200,
                # a young shadow's 10 residuals against the live model's 200 gave mae_ratio
                # 0.72-1.29 for the very same model; with 20 and 10, 0.94-1.05.)
                "quality": {"interval_s": 1, "min_samples": 20, "samples": 20},
                "metrics": {"interval_s": 1},
            }  # fmt: skip
            for table, keys in tables.items():
                doc[table] = {**doc.get(table, {}), **keys}
            stream = topic_stream("models/room.tflite", self.input_topic(dev))
            (home / "agent.toml").write_text(to_toml({**doc, "streams": [stream]}))
        self._watch = _client(port, f"watch-{uuid.uuid4().hex[:8]}")
        self._watch.on_message = self._on_status
        self._watch.subscribe(f"{prefix}/+/status", qos=1)

    def input_topic(self, device: str) -> str:
        """The MQTT topic ``device`` reads its readings from."""
        return f"sensors/{self.prefix}/{device}/room"

    def home(self, device: str) -> Path:
        """``device``'s directory (``agent.toml``, ``agent.log``, ``models/``, ``state/``)."""
        return self.directory / device

    def model(self, device: str) -> Path:
        """``device``'s live bundle (``<model>.shadow`` next to it while a shadow runs)."""
        return self.home(device) / "models" / "room.tflite"

    def log(self, device: str) -> str:
        """What ``device``'s agent wrote to stderr so far."""
        path = self.home(device) / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _on_status(self, _c: Any, _u: Any, msg: Any) -> None:
        device = msg.topic[len(self.prefix) + 1 : -len("/status")]
        with self._cond:
            self._status[device] = msg.payload.decode(errors="replace")
            self._cond.notify_all()

    def _wait_status(self, devices: tuple[str, ...], status: str, timeout_s: float) -> None:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: all(self._status.get(d) == status for d in devices), timeout_s
            )
        if not ok:
            late = [d for d in devices if self._status.get(d) != status]
            raise AssertionError(f"not {status} after {timeout_s} s: {late}\n{self.log(late[0])}")

    def _spawn(self, device: str) -> None:
        proc = self._procs.get(device)
        assert proc is None or proc.poll() is not None, f"{device} is running"
        with (self.home(device) / "agent.log").open("a") as log:
            self._procs[device] = start_agent(
                self.home(device) / "agent.toml", stdin=subprocess.DEVNULL, stderr=log
            )

    def start_all(self, timeout_s: float = 180) -> None:
        """Start every agent at once (they import in parallel, two cores or not) and the
        feeder; return once every device is ``online`` (``start_s`` says how long it took)."""
        began = time.monotonic()
        for dev in self.devices:
            self._spawn(dev)
        self._feeder = Feeder(self.port, {d: self.input_topic(d) for d in self.devices})
        self._wait_status(self.devices, "online", timeout_s)
        self.start_s = time.monotonic() - began

    def start(self, device: str, timeout_s: float = 60) -> None:
        """(Re)start ``device``'s agent; returns once it is ``online`` again."""
        with self._cond:
            self._status.pop(device, None)
        self._spawn(device)
        self._wait_status((device,), "online", timeout_s)

    def stop(self, device: str, timeout_s: float = 30) -> None:
        """SIGTERM ``device``'s agent and wait for it to exit (status 0) and be ``offline``."""
        proc = self._procs[device]
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout_s)
        assert code == 0, f"{device} exited {code}\n{self.log(device)}"
        self._wait_status((device,), "offline", 10)

    def running(self) -> list[str]:
        """The devices whose agent process is alive."""
        return [d for d, p in self._procs.items() if p.poll() is None]

    def forecast_log(self, port: Optional[int] = None) -> ForecastLog:
        """A :class:`ForecastLog` on ``port`` (default: this fleet's broker); close it after."""
        return ForecastLog(port or self.port, self.prefix)

    def close(self) -> None:
        """Stop the feeder and every agent (SIGTERM, all at once; SIGKILL after 30 s)."""
        if self._feeder is not None:
            self._feeder.close()
        live = [p for p in self._procs.values() if p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 30
        for proc in live:
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._watch.loop_stop()
        self._watch.disconnect()

    begin = start_all  #: what ``with`` starts (:class:`~tests.support.managed.Managed`)
