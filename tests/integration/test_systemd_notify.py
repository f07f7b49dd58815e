"""systemd's notify protocol for real: the test binds the unix datagram socket systemd would,
runs the agent with NOTIFY_SOCKET and WATCHDOG_USEC, and reads what it sends. Also the health
file and ``sensorcast health``, which a container HEALTHCHECK runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.support.agents import run_cli, start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.configs import agent_config, topic_stream
from tests.support.paths import DEMO_DIR

WATCHDOG_USEC = 600_000  # pings due every 0.2 s


class NotifySocket:
    """What systemd does: a datagram socket, one message per datagram, timestamped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self, key: str) -> list[tuple[float, str]]:
        return [
            (t, line)
            for t, msg in list(self.messages)
            for line in msg.split("\n")
            if line.startswith(key)
        ]

    def wait_for(self, key: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.lines(key)
            if found:
                return found[0][1]
            time.sleep(0.05)
        raise AssertionError(f"no {key} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


def test_ready_status_watchdog_and_stuck_loop(
    mosquitto: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    config = agent_config(
        tmp_path,
        device="sd",
        port=mosquitto.port,
        prefix=topic_prefix,
        state={"dir": tmp_path / "state"},
        streams=[topic_stream(DEMO_DIR / "room.tflite", f"{topic_prefix}/in")],
    )
    notify = NotifySocket(tmp_path / "notify.sock")
    stall = tmp_path / "stall"
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "SENSORCAST_TEST_STALL_FILE": str(stall),
    }
    proc = start_agent(config, stdin=subprocess.DEVNULL, env=env)
    try:
        assert notify.wait_for("STATUS=connecting").startswith(
            f"STATUS=connecting to mqtt://127.0.0.1:{mosquitto.port}"
        )
        notify.wait_for("READY=1")
        assert notify.wait_for("MAINPID=") == f"MAINPID={proc.pid}"
        ready_at = notify.lines("READY=1")[0][0]
        connecting_at = notify.lines("STATUS=connecting")[0][0]
        assert connecting_at <= ready_at
        # READY carries the streams it runs.
        ready_msg = next(m for _, m in notify.messages if "READY=1" in m)
        assert "streams: room (room@" in ready_msg

        time.sleep(1.5)
        pings = [t for t, _ in notify.lines("WATCHDOG=1") if t > ready_at]
        assert len(pings) >= 4, pings  # every ~0.2 s
        assert max(b - a for a, b in zip(pings, pings[1:])) < 0.5

        # The health file says healthy while the loop runs.
        time.sleep(5.5)  # at least one health-file refresh after the first
        healthy = run_cli("health", "--config", str(config))
        assert healthy.returncode == 0, healthy.stderr
        assert healthy.stdout.startswith("healthy: 1 streams")

        # A stuck main loop: no more pings (the MQTT thread is alive and well meanwhile).
        stall.touch()
        time.sleep(0.3)
        stalled_at = time.monotonic()
        time.sleep(2.0)
        during = [t for t, _ in notify.lines("WATCHDOG=1") if t > stalled_at]
        assert during == [], f"watchdog pinged while the loop was stuck: {during}"
        sick = run_cli("health", "--config", str(config), "--max-age", "1.5")
        assert sick.returncode == 1
        assert "stuck, not running" in sick.stderr

        stall.unlink()
        resumed_at = time.monotonic()
        time.sleep(1.0)
        assert [t for t, _ in notify.lines("WATCHDOG=1") if t > resumed_at], "pings never resumed"

        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        notify.wait_for("STOPPING=1")
        gone = run_cli("health", "--config", str(config))
        assert gone.returncode == 1
        assert "no health file" in gone.stderr and "is the agent running" in gone.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def test_health_reports_a_lost_broker(tmp_path: Path) -> None:
    """The health file of an agent that cannot reach its broker turns unhealthy, with why."""
    import json

    from sensorcast.agent.telemetry.health import check_health

    path = tmp_path / "health-x.json"
    now = time.time()
    path.write_text(
        json.dumps(
            {"time": now, "connected": False, "disconnected_since": now - 120, "outbox_depth": 7}
        )
    )
    ok, why = check_health(path, 30)
    assert not ok
    assert why.startswith("not connected to the MQTT broker for 120 s (7 forecasts queued")
    path.write_text(json.dumps({"time": now, "disconnected_since": now - 5, "streams": 2}))
    ok, why = check_health(path, 30)
    assert ok and why.startswith("healthy: 2 streams")
    path.write_text("{")
    ok, why = check_health(path, 30)
    assert not ok and "unreadable" in why
