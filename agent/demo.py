"""``sensorcast demo``: the shipped model, a real broker, a sensor stream, forecasts read back.

Uses the system's Mosquitto when installed, otherwise an embedded pure-Python
broker (amqtt, the ``[demo]`` extra), so it needs no root and no setup.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from agent.errors import SensorcastError

__all__ = ["DEMO_DIR", "EmbeddedBroker", "MosquittoBroker", "room_series", "run_demo"]

#: Where the shipped demo bundle, its Keras model and its data live.
DEMO_DIR = Path(__file__).resolve().parent.parent / "examples" / "demo"
DEMO_PERIOD_S = 300.0
DEVICE = "demo-pi"


def room_series(n: int, start: float, period_s: float = DEMO_PERIOD_S, seed: int = 7) -> np.ndarray:
    """A deterministic synthetic room: ``(n, 3)`` rows of (ts, temperature °C, humidity %).

    A daily cycle, a slower weather drift and sensor noise; the same generator
    makes the demo model's training data (examples/demo/train.py).
    """
    rng = np.random.default_rng(seed)
    ts = start + period_s * np.arange(n)
    day = 2 * math.pi * ts / 86400.0
    noise = rng.normal(0, 0.04, n)
    weather = np.empty(n)
    level = 0.0
    for i in range(n):  # a slow mean-reverting drift: AR(1)
        level = 0.995 * level + noise[i]
        weather[i] = level
    temperature = 21.0 + 1.8 * np.sin(day - 2.0) + weather + rng.normal(0, 0.08, n)
    humidity = 48.0 - 6.0 * np.sin(day - 1.6) - 4.0 * weather + rng.normal(0, 0.5, n)
    return np.column_stack([ts, temperature, humidity])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout_s: float) -> bool:
    """True once something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class MosquittoBroker:
    """The system's ``mosquitto`` on a free loopback port; by default anonymous, no persistence."""

    def __init__(self, binary: str, port: Optional[int] = None, conf: Optional[str] = None) -> None:
        """``conf`` replaces the default (anonymous) listener config; ``{port}`` is filled in."""
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
        """Path of the system's mosquitto, if installed (it lives in /usr/sbin on Debian)."""
        return shutil.which("mosquitto") or next(
            (
                p
                for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
                if os.access(p, os.X_OK)
            ),
            None,
        )

    @property
    def description(self) -> str:
        out = subprocess.run([self.binary, "-h"], capture_output=True, text=True, check=False)
        first = (out.stdout or out.stderr).splitlines()[:1]
        version = first[0].split(" version ")[-1].strip() if first else "?"
        return f"system Mosquitto {version} ({self.binary})"

    def start(self) -> None:
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        if not wait_port(self.port, 10):
            self.stop()
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise SensorcastError(
                f"mosquitto did not start on port {self.port}: {' | '.join(tail)}"
            )

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


class EmbeddedBroker:
    """amqtt's pure-Python broker in a background thread (for machines without Mosquitto)."""

    def __init__(self, port: Optional[int] = None, why: str = "") -> None:
        self.port = port or free_port()
        self.description = f"embedded amqtt broker{why}"
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None

    def start(self) -> None:
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

        async def create() -> Any:
            broker = Broker(config)
            await broker.start()
            return broker

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self._broker = loop.run_until_complete(create())
            except BaseException as exc:  # reported to the starting thread
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._broker.shutdown())
            loop.close()

        self._thread = threading.Thread(target=serve, name="amqtt-broker", daemon=True)
        self._thread.start()
        self._ready.wait(15)
        if self._error is not None or not wait_port(self.port, 10):
            raise SensorcastError(f"the embedded broker did not start ({self._error})")

    def close(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def run_demo(broker: str = "auto", forecasts: int = 5, model_dir: Path = DEMO_DIR) -> int:
    """Run the whole story once and print it; returns an exit code."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.manifest import read_bundle

    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # interleave well with the agent's log
    bundle_path = model_dir / "room.tflite"
    bundle = read_bundle(bundle_path)
    m = bundle.manifest
    binary = MosquittoBroker.find()
    if broker == "mosquitto" and binary is None:
        raise SensorcastError(
            "--broker mosquitto: mosquitto is not installed (apt-get install mosquitto)"
        )
    srv: Any
    if binary and broker != "embedded":
        srv = MosquittoBroker(binary)
    else:
        srv = EmbeddedBroker(why=" (no system Mosquitto found)" if binary is None else "")
    print(f"broker: {srv.description} on 127.0.0.1:{srv.port}")
    srv.start()
    work = tempfile.TemporaryDirectory(prefix="sensorcast-demo-")
    agent_proc: Optional[subprocess.Popen[bytes]] = None
    try:
        config = Path(work.name) / "demo.toml"
        config.write_text(
            f'[device]\nid = "{DEVICE}"\n[state]\ndir = "{Path(work.name) / "state"}"\n'
            f'[mqtt]\nurl = "mqtt://127.0.0.1:{srv.port}"\n'
            f'[[streams]]\nname = "room"\nmodel = "{bundle_path}"\ninput_topic = "sensors/room"\n'
        )
        print(
            f"model:  {bundle.label} ({m.quantization}): {m.window} x {m.period_s:g} s of "
            f"{', '.join(m.features)} -> {m.horizon} steps of {', '.join(m.targets)}"
        )
        received: list[dict[str, Any]] = []
        statuses: list[str] = []
        got = threading.Condition()

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            with got:
                if msg.topic.endswith("/status"):
                    statuses.append(msg.payload.decode())
                elif msg.topic.endswith("/forecast"):
                    received.append(json.loads(msg.payload))
                got.notify_all()

        sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="sensorcast-demo-subscriber")
        sub.on_message = on_message
        sub.connect("127.0.0.1", srv.port)
        sub.subscribe(f"sensorcast/{DEVICE}/#", qos=1)
        sub.loop_start()

        agent_log = Path(work.name) / "agent.log"
        with agent_log.open("wb") as log:
            agent_proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        with got:
            if not got.wait_for(lambda: "online" in statuses, timeout=30):
                tail = agent_log.read_text(errors="replace").strip().splitlines()[-1:]
                raise SensorcastError(f"the agent did not come online within 30 s: {tail}")
        print(f"agent:  online (sensorcast/{DEVICE}/status)")

        n = m.window + forecasts
        start = (math.floor(time.time() / m.period_s) - n) * m.period_s
        rows = room_series(n + m.horizon, start, m.period_s)
        pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="sensorcast-demo-sensor")
        pub.connect("127.0.0.1", srv.port)
        pub.loop_start()
        print(f"sensor: publishing {n} readings to sensors/room (one per {m.period_s:g} s of data)")
        for ts, temp, hum in rows[:n]:
            payload = json.dumps(
                {"ts": ts, "temperature": round(temp, 2), "humidity": round(hum, 1)}
            )
            pub.publish("sensors/room", payload, qos=1).wait_for_publish(5)
            time.sleep(0.02)
        with got:
            got.wait_for(lambda: len(received) >= forecasts, timeout=30)
        pub.loop_stop()
        pub.disconnect()
        if not received:
            raise SensorcastError("no forecast arrived within 30 s")
        by_ts = {float(r[0]): r for r in rows}
        print(f"\nforecasts on sensorcast/{DEVICE}/room/forecast (read back by a subscriber):")
        for f in received[:forecasts]:
            end = time.strftime("%H:%M", time.localtime(f["window_end"]))
            first = f["values"][0][0]
            last = f["values"][-1][0]
            horizon_ts = f["steps"][-1]
            actual = by_ts.get(horizon_ts)
            actual_txt = f" (simulated actual {actual[1]:.2f})" if actual is not None else ""
            print(
                f"  #{f['seq']} data to {end}: {f['targets'][0]} next {first:.2f}, "
                f"in {len(f['steps']) * f['period_s'] / 60:.0f} min {last:.2f}{actual_txt}"
            )
        agent_proc.send_signal(signal.SIGTERM)
        try:
            agent_proc.wait(20)
        except subprocess.TimeoutExpired:
            tail = agent_log.read_text(errors="replace").strip().splitlines()[-5:]
            raise SensorcastError(
                f"the agent did not stop within 20 s of SIGTERM: {tail}"
            ) from None
        with got:
            got.wait_for(lambda: statuses and statuses[-1] == "offline", timeout=10)
        print(
            f"agent:  {statuses[-1] if statuses else 'no status'} "
            f"(exit code {agent_proc.returncode})"
        )
        print("\nagent log:")
        for line in agent_log.read_text(errors="replace").splitlines():
            print(f"  {line}")
        sub.loop_stop()
        sub.disconnect()
        return 0 if agent_proc.returncode == 0 else 1
    finally:
        if agent_proc is not None and agent_proc.poll() is None:
            agent_proc.kill()
            agent_proc.wait()
        srv.close()
        work.cleanup()
