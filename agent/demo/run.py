"""``sensorcast demo``: the shipped model, a real broker, a sensor stream, forecasts read back.

The story, printed as it happens: a broker starts, the agent starts on the demo bundle and
comes online, a synthetic room publishes its readings, a subscriber reads the forecasts back,
the agent stops (``offline``) and its log is shown.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sensorcast.agent.demo.brokers import pick_broker
from sensorcast.agent.demo.room import BUNDLE, room_series
from sensorcast.agent.errors import SensorcastError
from sensorcast.agent.forecast.manifest import Bundle, Manifest, read_bundle

__all__ = ["DEVICE", "run_demo"]

DEVICE = "demo-pi"  #: The demo agent's device id (its topics: ``sensorcast/demo-pi/...``).
SENSOR_TOPIC = "sensors/room"


def run_demo(broker: str = "auto", forecasts: int = 5, bundle_path: Path = BUNDLE) -> int:
    """Run the whole story once and print it; returns an exit code.

    ``broker`` is ``auto``, ``mosquitto`` or ``embedded`` (see :func:`pick_broker`); the
    story ends after ``forecasts`` forecasts of the bundle at ``bundle_path``.
    """
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # interleave well with the agent's log
    bundle = read_bundle(bundle_path)
    server = pick_broker(broker)
    print(f"broker: {server.description} on 127.0.0.1:{server.port}")
    try:
        server.start()
        with tempfile.TemporaryDirectory(prefix="sensorcast-demo-") as work:
            return _story(bundle, server.port, Path(work), forecasts)
    finally:
        server.close()


def _story(bundle: Bundle, port: int, work: Path, forecasts: int) -> int:
    """The agent's part, against the broker on ``port``; ``work`` holds its config and log."""
    m = bundle.manifest
    config = _write_config(work, port, bundle.path)
    print(
        f"model:  {bundle.label} ({m.quantization}): {m.window} x {m.period_s:g} s of "
        f"{', '.join(m.features)} -> {m.horizon} steps of {', '.join(m.targets)}"
    )
    watcher = _Watcher(port)
    agent = _Agent(config, work / "agent.log")
    try:
        if not watcher.wait(lambda: "online" in watcher.statuses, 30):
            raise SensorcastError(f"the agent did not come online within 30 s: {agent.tail(1)}")
        print(f"agent:  online (sensorcast/{DEVICE}/status)")
        rows = _feed(port, m, forecasts)
        watcher.wait(lambda: len(watcher.received) >= forecasts, 30)
        if not watcher.received:
            raise SensorcastError("no forecast arrived within 30 s")
        _print_forecasts(watcher.received[:forecasts], rows)
        code = agent.stop()
        watcher.wait(lambda: watcher.statuses[-1:] == ["offline"], 10)
        status = watcher.statuses[-1] if watcher.statuses else "no status"
        print(f"agent:  {status} (exit code {code})")
        print("\nagent log:")
        for line in agent.tail(None):
            print(f"  {line}")
        return 0 if code == 0 else 1
    finally:
        agent.kill()
        watcher.close()


def _write_config(work: Path, port: int, bundle_path: Path) -> Path:
    """The demo agent's config: one stream of the bundle on :data:`SENSOR_TOPIC`."""
    config = work / "demo.toml"
    # JSON strings are valid TOML basic strings: paths are quoted and escaped once.
    config.write_text(
        f'[device]\nid = "{DEVICE}"\n[state]\ndir = {json.dumps(str(work / "state"))}\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\n'
        f'[[streams]]\nname = "room"\nmodel = {json.dumps(str(bundle_path))}\n'
        f'input_topic = "{SENSOR_TOPIC}"\n'
    )
    return config


class _Watcher:
    """A subscriber to the demo device's topics: its statuses and forecasts as they arrive."""

    def __init__(self, port: int) -> None:
        self.statuses: list[str] = []
        self.received: list[dict[str, Any]] = []
        self._got = threading.Condition()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="sensorcast-demo-subscriber"
        )
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(f"sensorcast/{DEVICE}/#", qos=1)
        self._client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._got:
            if msg.topic.endswith("/status"):
                self.statuses.append(msg.payload.decode())
            elif msg.topic.endswith("/forecast"):
                self.received.append(json.loads(msg.payload))
            self._got.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Whether ``predicate()`` came true within ``timeout_s`` seconds."""
        with self._got:
            return self._got.wait_for(predicate, timeout=timeout_s)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class _Agent:
    """``sensorcast run`` in a child process, its output in ``log``."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sensorcast.agent", "run", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def tail(self, lines: int | None) -> list[str]:
        """The last ``lines`` lines of its log (all of them for None)."""
        text = self.log.read_text(errors="replace")
        return text.strip().splitlines()[-lines:] if lines else text.splitlines()

    def stop(self) -> int:
        """SIGTERM, then its exit code; raises if it is still running 20 s later."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            raise SensorcastError(
                f"the agent did not stop within 20 s of SIGTERM: {self.tail(5)}"
            ) from None

    def kill(self) -> None:
        """SIGKILL if it still runs (the story failed half-way)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _feed(port: int, m: Manifest, forecasts: int) -> np.ndarray:
    """Publish a window's worth of readings and ``forecasts`` more, ending now, one per
    period of data (20 ms apart in real time). Returns every row of the synthetic room,
    ``horizon`` rows past the last one published included (the actuals to compare with)."""
    n = m.window + forecasts
    start = (math.floor(time.time() / m.period_s) - n) * m.period_s
    rows = room_series(n + m.horizon, start, m.period_s)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="sensorcast-demo-sensor")
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    print(f"sensor: publishing {n} readings to {SENSOR_TOPIC} (one per {m.period_s:g} s of data)")
    try:
        for ts, temp, hum in rows[:n]:
            payload = json.dumps(
                {"ts": ts, "temperature": round(temp, 2), "humidity": round(hum, 1)}
            )
            pub.publish(SENSOR_TOPIC, payload, qos=1).wait_for_publish(5)
            time.sleep(0.02)
    finally:
        pub.loop_stop()
        pub.disconnect()
    return rows


def _print_forecasts(received: list[dict[str, Any]], rows: np.ndarray) -> None:
    """One line per forecast: its first and last step, and the simulated actual at the last."""
    by_ts = {float(r[0]): r for r in rows}
    print(f"\nforecasts on sensorcast/{DEVICE}/room/forecast (read back by a subscriber):")
    for f in received:
        end = time.strftime("%H:%M", time.localtime(f["window_end"]))
        first = f["values"][0][0]
        last = f["values"][-1][0]
        actual = by_ts.get(f["steps"][-1])
        actual_txt = f" (simulated actual {actual[1]:.2f})" if actual is not None else ""
        print(
            f"  #{f['seq']} data to {end}: {f['targets'][0]} next {first:.2f}, "
            f"in {len(f['steps']) * f['period_s'] / 60:.0f} min {last:.2f}{actual_txt}"
        )
