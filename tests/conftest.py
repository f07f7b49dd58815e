"""Shared fixtures: a real Mosquitto, the demo's files and bundles, MQTT subscribers, a disk to
fill. The code behind them lives in tests/support, which tests import helpers from."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, settings

from tests.support.agents import run_cli
from tests.support.bridges import BridgedPair
from tests.support.brokers import MosquittoBroker, run_mosquitto
from tests.support.bundles import convert_demo
from tests.support.host import missing_tool
from tests.support.mqtt import Subscriber
from tests.support.paths import DEMO_DIR, REPO

#: Still imported from here by a few test modules; their home is tests.support.
__all__ = ["DEMO_DIR", "REPO", "run_cli"]

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


@pytest.fixture(autouse=True)
def state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's agents keep their outbox in a state directory of its own."""
    state = tmp_path / "state"
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    return state


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
    """examples/demo: the demo's Keras model, its bundle, norm.json, room.csv, golden.npz."""
    return DEMO_DIR


@pytest.fixture(scope="session")
def fast_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model relabelled with a 0.2 s period, so a window fills in 5 s of readings."""
    out = tmp_path_factory.mktemp("fast") / "room.tflite"
    assert convert_demo(out, "--period", "0.2", calibrate=False) == 0
    return out


@pytest.fixture(scope="session")
def calibrated_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model (float32) with a 0.2 s period, calibrated on the demo's room.csv, so its
    manifest carries the held-out error, the naive baselines and the residual quantiles
    (``accuracy.residual_quantiles``) the agent's prediction intervals start from."""
    out = tmp_path_factory.mktemp("calibrated") / "room.tflite"
    assert convert_demo(out, "--period", "0.2", "--quantize", "float32") == 0
    return out


@pytest.fixture
def subscriber_factory() -> Iterator[Callable[[int, str], Subscriber]]:
    """``make(port, topic_filter)``: a subscribed :class:`Subscriber`, closed after the test."""
    made: list[Subscriber] = []

    def make(port: int, topic: str) -> Subscriber:
        sub = Subscriber(port, topic)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


@pytest.fixture
def bridged_pair(topic_prefix: str) -> Iterator[BridgedPair]:
    """A site Mosquitto bridged to a central one as deploy/mosquitto-site.conf and
    deploy/mosquitto-central.conf ship them (anonymous, site ``site-a``, under this test's
    topic prefix), the bridge up; ``cut()`` and ``restore()`` its link
    (tests/support/bridges.py)."""
    with BridgedPair(topic_prefix) as pair:
        yield pair
