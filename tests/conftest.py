"""Shared fixtures: a real Mosquitto, the shipped demo bundle, helpers to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import HealthCheck, settings

from agent.demo import DEMO_DIR, MosquittoBroker

REPO = Path(__file__).resolve().parent.parent

# Property tests: no per-example deadline and no slow-generation check (CI shares the machine
# with TensorFlow conversions); a fixed example budget per test keeps the time bounded.
settings.register_profile(
    "sensorcast",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=300,
)
# `bench/fuzz` runs the same properties at scale.
settings.register_profile(
    "fuzz", parent=settings.get_profile("sensorcast"), max_examples=20_000, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "sensorcast"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_tool(what: str) -> None:
    """Fail in CI (the tool must be installed there), skip elsewhere, with one message."""
    if IN_CI:
        pytest.fail(f"{what} (CI=true: .ci/run must install it)")
    pytest.skip(what)


@pytest.fixture(autouse=True)
def state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's agents keep their outbox in a state directory of its own."""
    state = tmp_path / "state"
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    return state


def run_deploy(
    cmd: list[str], what: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a deploy/ script (or a command through one). Those exit 3, with the reason as their
    last stderr line, when this host cannot do it (no root, no QEMU...): then the test fails in
    CI and skips elsewhere, saying ``what`` and why. Any other status is the caller's to judge."""
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env=env, check=False,
    )  # fmt: skip
    if done.returncode == 3:
        why = (done.stderr.strip().splitlines() or [f"{Path(cmd[0]).name}: exit 3"])[-1]
        missing_tool(f"{what}: {why}")
    return done


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 512 KiB filesystem (tmpfs) to fill up: a full SD card in miniature."""
    mount = tmp_path / "tiny-disk"
    mount.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        missing_tool("a full-disk test mounts a tmpfs: run it as root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        missing_tool(f"cannot mount a tmpfs for the full-disk test: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(mount: Path) -> None:
    """Write a file until the filesystem at ``mount`` has no space left."""
    try:
        with (mount / "filler").open("wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass  # ENOSPC: full


def run_mosquitto(conf: Optional[str] = None) -> Iterator[MosquittoBroker]:
    """A started system mosquitto (``conf`` as for :class:`MosquittoBroker`), closed after;
    for fixtures to ``yield from``. Fails (CI) or skips when mosquitto is not installed."""
    binary = MosquittoBroker.find()
    if binary is None:
        missing_tool("mosquitto is not installed: apt-get install mosquitto")
    assert binary is not None
    broker = MosquittoBroker(binary, conf=conf)
    broker.start()
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoBroker]:
    """The system's mosquitto on a free loopback port for the whole session."""
    yield from run_mosquitto()


@pytest.fixture
def topic_prefix() -> str:
    """A unique topic root per test, so tests sharing the broker never see each other."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO_DIR


def convert_demo(out: Path, *extra: str, calibrate: bool = True) -> int:
    """Run the real converter on the demo's Keras model (its norm and features) into ``out``."""
    from convert.cli import main as convert_main

    args = [str(DEMO_DIR / "room.keras"), "-o", str(out), "--quiet", "--norm",
            str(DEMO_DIR / "norm.json"), "--features", "temperature,humidity"]  # fmt: skip
    if calibrate:
        args += ["--calibration", str(DEMO_DIR / "room.csv")]
    return convert_main([*args, *extra])


@pytest.fixture(scope="session")
def fast_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model relabelled with a 0.2 s period, so a window fills in 5 s of readings."""
    out = tmp_path_factory.mktemp("fast") / "room.tflite"
    assert convert_demo(out, "--period", "0.2", calibrate=False) == 0
    return out


def json_lines(rows: Any, start: float, period: float) -> list[str]:
    """Readings ``(temperature, humidity)`` as JSON lines, one per period from ``start``."""
    import json

    return [
        json.dumps({"ts": start + i * period, "temperature": t, "humidity": h}) + "\n"
        for i, (t, h) in enumerate(rows)
    ]


def run_cli(*args: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``sensorcast ARGS`` in a fresh interpreter, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
        **kwargs,
    )


def start_agent(config: Path, **kwargs: Any) -> subprocess.Popen[str]:
    """``sensorcast run --config CONFIG`` in a fresh interpreter: stdin a pipe (for stdin
    sources), stderr captured (read it with ``communicate``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


class Subscriber:
    """A real MQTT client collecting messages on a topic filter."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[list[tuple[str, bytes, bool]]], bool], timeout: float = 30
    ) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout=timeout)

    def payloads(self, suffix: str) -> list[bytes]:
        with self._cond:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscriber_factory() -> Iterator[Callable[[int, str], Subscriber]]:
    made: list[Subscriber] = []

    def make(port: int, topic: str) -> Subscriber:
        sub = Subscriber(port, topic)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()
