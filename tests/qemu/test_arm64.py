"""The agent on arm64, under QEMU user emulation: its tests, then readings in and forecasts out.

Runs in an arm64 Debian bookworm chroot (see ``conftest.py``) with sensorcast installed from
this checkout's wheel in two virtual environments: LiteRT with numpy 2, and tflite-runtime 2.14
with numpy < 2. Not part of the plain ``pytest`` run (``-m "not qemu"`` in pyproject.toml);
``scripts/test`` runs it last: ``pytest -m qemu tests/qemu``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.qemu.arm64_plugin import EXCLUDED
from tests.qemu.conftest import COLD_CACHE_TIMEOUT_S, VENVS, Arm64, Bind
from tests.support.brokers import MosquittoBroker
from tests.support.configs import agent_config, topic_stream
from tests.support.mqtt import Subscriber
from tests.support.paths import REPO

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(COLD_CACHE_TIMEOUT_S)]

FLOAT32 = REPO / "tests" / "data" / "room_float32.tflite"
#: °C between the arm64 and the x86 agent's forecasts of the float32 bundle. They are not
#: bit-identical: x86 LiteRT runs XNNPACK, arm64 under emulation runs the built-in (NEON)
#: kernels (XNNPACK needs cpuinfo, which needs /sys), and the two sum in different orders.
#: Measured here: at most 6.5e-7 on either runtime, in 52 to 62 of the 84 values; the bound
#: of tests/runtime against Keras is 1e-4.
ARCH_ATOL = 1e-5
AARCH64 = 183  # ELF e_machine


def _chroot_pytest(
    arm64: Arm64, runtime: str, path: str, out: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    """Run ``pytest path`` from the checkout (read-only at /src) in the chroot's venv."""
    result = arm64.run(
        f"{VENVS[runtime]}/bin/python",
        *("-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.qemu.arm64_plugin"),
        *("--junitxml=/out/junit.xml", path),
        env={
            "SENSORCAST_RUNTIME": runtime,
            "HYPOTHESIS_PROFILE": "qemu",
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        binds=[Bind(REPO, "/src", read_only=True), Bind(out, "/out")],
        cwd="/src",
        timeout=1200,  # emulated, beside the main run: a guard against a hang, not a budget
    )
    counts: dict[str, int] = {}
    if (out / "junit.xml").exists():
        suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
        assert suite is not None
        counts = {k: int(suite.get(k, "-1")) for k in ("tests", "failures", "errors", "skipped")}
    return result, counts


def _host_collected(path: str) -> int:
    """How many tests the host's pytest collects under ``path``."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", path],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=120,
    ).stdout
    match = re.search(r"(\d+) tests? collected", out)
    assert match, out[-2000:]
    return int(match.group(1))


def test_the_chroot_runs_arm64_code_under_emulation(arm64: Arm64) -> None:
    python = (arm64.rootfs / "usr" / "bin" / "python3").resolve()
    header = python.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == AARCH64
    assert os.uname().machine == "x86_64"  # the host: what runs arm64 code here is QEMU

    code = (
        "import platform, numpy, ai_edge_litert, sensorcast.agent;"
        "print(platform.machine(), numpy.__version__, sensorcast.agent.__file__)"
    )
    result = arm64.run(f"{VENVS['litert']}/bin/python", "-c", code, cwd="/tmp")
    assert result.returncode == 0, result.stderr
    machine, numpy_version, agent_file = result.stdout.split()
    assert machine == "aarch64" and numpy_version.startswith("2.")
    # the agent comes from the installed wheel, not from a checkout
    assert agent_file == (
        f"{VENVS['litert']}/lib/python3.11/site-packages/sensorcast/agent/__init__.py"
    )


def test_agent_unit_tests_pass_on_arm64(arm64: Arm64, tmp_path: Path) -> None:
    result, counts = _chroot_pytest(arm64, "litert", "tests/unit", tmp_path)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert re.search(r"arm64 chroot: machine aarch64, numpy 2\.", result.stdout), result.stdout
    # every unit test the host has ran, bar the few that need TensorFlow; none skipped
    left_out = sum(n.startswith("tests/unit/") for n in EXCLUDED)
    expected = _host_collected("tests/unit") - left_out
    assert counts == {"tests": expected, "failures": 0, "errors": 0, "skipped": 0}


@pytest.mark.parametrize(("runtime", "numpy_major"), [("litert", 2), ("tflite-runtime", 1)])
def test_runtime_tests_pass_on_arm64(
    arm64: Arm64, tmp_path: Path, runtime: str, numpy_major: int
) -> None:
    """tests/runtime: golden Keras outputs within 1e-4 on each arm64 runtime."""
    result, counts = _chroot_pytest(arm64, runtime, "tests/runtime", tmp_path)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert f"machine aarch64, numpy {numpy_major}." in result.stdout, result.stdout
    expected = _host_collected("tests/runtime")
    assert counts == {"tests": expected, "failures": 0, "errors": 0, "skipped": 0}


# --- end to end: an arm64 agent and an x86 agent on one broker, the same bundle and readings


def _config(directory: Path, port: int, prefix: str, device: str) -> Path:
    """A config next to a copy of the float32 bundle, with paths relative to it."""
    directory.mkdir()
    (directory / "room.tflite").write_bytes(FLOAT32.read_bytes())
    return agent_config(
        directory,
        device=device,
        port=port,
        prefix=prefix,
        streams=[topic_stream("room.tflite", f"{prefix}/in/room")],
    )


@pytest.fixture
def agents() -> Iterator[list[tuple[subprocess.Popen[str], Path]]]:
    """Agent processes started by a test (with their stderr files), killed if still running."""
    started: list[tuple[subprocess.Popen[str], Path]] = []
    yield started
    for proc, _ in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _start(
    cmd: list[str], log: Path, started: list[tuple[subprocess.Popen[str], Path]]
) -> subprocess.Popen[str]:
    with log.open("w") as err:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, text=True
        )
    started.append((proc, log))
    return proc


def _by_window(sub: Subscriber, prefix: str, device: str) -> dict[float, dict[str, Any]]:
    return {
        f["window_end"]: f
        for f in map(json.loads, sub.payloads(f"{prefix}/{device}/room/forecast"))
    }


@pytest.mark.mqtt
@pytest.mark.parametrize("runtime", ["litert", "tflite-runtime"])
def test_arm64_agent_over_host_mosquitto_forecasts_like_the_x86_agent(
    arm64: Arm64,
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
    agents: list[tuple[subprocess.Popen[str], Path]],
    runtime: str,
) -> None:
    port = mosquitto.port
    sub = subscriber_factory(port, f"{topic_prefix}/#")
    x86 = _start(
        [sys.executable, "-m", "sensorcast.agent", "run", "--runtime", "litert", "--config",
         str(_config(tmp_path / "x86", port, topic_prefix, "x86"))],
        tmp_path / "x86.log", agents,
    )  # fmt: skip
    _config(tmp_path / "arm64", port, topic_prefix, "arm64")
    arm = _start(
        arm64.command(
            f"{VENVS[runtime]}/bin/sensorcast", "run", "--config", "/data/agent.toml",
            env={"SENSORCAST_RUNTIME": runtime, "STATE_DIRECTORY": "/data/state"},
            binds=[Bind(tmp_path / "arm64", "/data")],
        ),
        tmp_path / "arm64.log", agents,
    )  # fmt: skip

    def online(device: str) -> bool:
        return any(t == f"{topic_prefix}/{device}/status" and p == b"online"
                   for t, p, _ in sub.messages)  # fmt: skip

    def logs() -> str:
        return "".join(log.read_text() for _, log in agents)

    assert sub.wait_for(lambda _: online("x86") and online("arm64"), timeout=120), logs()
    # The arm64 agent is QEMU running arm64 code (exec'd in place of deploy/qemu/run), and
    # the chroot's mounts are in their own namespace: the host's table has none of them.
    assert "qemu-aarch64" in os.readlink(f"/proc/{arm.pid}/exe")
    assert "sensorcast-qemu" not in Path("/proc/self/mounts").read_text()

    rows = np.loadtxt(REPO / "examples" / "demo" / "room.csv", delimiter=",", skiprows=1)[:30]
    feeder = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"feeder-{time.monotonic_ns()}")
    feeder.connect("127.0.0.1", port)
    feeder.loop_start()
    try:
        for ts, temperature, humidity in rows:
            payload = json.dumps({"ts": ts, "temperature": temperature, "humidity": humidity})
            feeder.publish(f"{topic_prefix}/in/room", payload, qos=1).wait_for_publish(10)
    finally:
        feeder.loop_stop()
        feeder.disconnect()

    expected = len(rows) - 24 + 1  # windows of 24 ending at rows 23..29
    assert sub.wait_for(
        lambda _: all(len(_by_window(sub, topic_prefix, d)) >= expected for d in ("x86", "arm64")),
        timeout=120,
    ), logs()
    x86_forecasts = _by_window(sub, topic_prefix, "x86")
    arm_forecasts = _by_window(sub, topic_prefix, "arm64")
    assert sorted(arm_forecasts) == sorted(x86_forecasts) == [float(t) for t in rows[23:, 0]]
    for end, mine in arm_forecasts.items():
        theirs = x86_forecasts[end]
        for key in ("seq", "model", "period_s", "targets", "steps"):
            assert mine[key] == theirs[key], key
    got = np.array([arm_forecasts[end]["values"] for end in sorted(arm_forecasts)])
    want = np.array([x86_forecasts[end]["values"] for end in sorted(x86_forecasts)])
    assert got.shape == want.shape == (expected, 12, 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=ARCH_ATOL)

    for proc in (x86, arm):
        proc.send_signal(signal.SIGTERM)
    for proc, log in agents:
        assert proc.wait(timeout=60) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    assert sub.wait_for(
        lambda ms: [p for t, p, _ in ms if t == f"{topic_prefix}/arm64/status"][-1] == b"offline",
        timeout=10,
    )
    arm_log = (tmp_path / "arm64.log").read_text()
    assert f"runtime {runtime}" in arm_log and f"{expected} forecasts" in arm_log, arm_log
    assert "sensorcast-qemu" not in Path("/proc/self/mounts").read_text()
