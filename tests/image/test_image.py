"""The container image (Dockerfile.arm64), built for linux/arm64 and run here without Docker.

``deploy/image/build`` builds it with buildah, its RUN steps under QEMU user emulation, on a
local stand-in for ``python:3.11-slim-bookworm`` (the arm64 Debian rootfs of deploy/qemu,
imported by ``deploy/image/base``), offline from the wheelhouse of ``deploy/qemu/wheels``.
The tests then run the arm64 image with podman (runc): ``--version``, ``check``, the user it
runs as, the image's own HEALTHCHECK command, and the agent itself against the session's
Mosquitto on the host network, hardened as deploy/compose.yaml runs it.

Cached between runs (``$SENSORCAST_CACHE``, default /var/cache/sensorcast): the rootfs, the
wheelhouse, the imported base and the private container storage with the build's layers, so
an unchanged checkout builds in seconds. The image this module builds, its containers and
their volumes are removed at the end. Needs root; without buildah, podman or QEMU the tests
fail under CI=true and skip elsewhere.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sensorcast.agent import __version__
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import read_bundle

from tests.support.brokers import MosquittoBroker
from tests.support.configs import agent_config, topic_stream
from tests.support.host import missing_tool, run_deploy
from tests.support.mqtt import Subscriber
from tests.support.paths import REPO

#: Cold cache: debootstrap of the rootfs (~3 min), the wheelhouse and pip under emulation.
COLD_CACHE_TIMEOUT_S = 1200
pytestmark = pytest.mark.timeout(COLD_CACHE_TIMEOUT_S)

IMAGE_DIR = REPO / "deploy" / "image"
CONFIG = "/etc/sensorcast/sensorcast.toml"  # where the image's CMD and HEALTHCHECK look
STATE = "/var/lib/sensorcast"
UID = 10001
#: What the image adds to its Python base: the agent's venv, measured 88 MB (numpy 2.4 with
#: OpenBLAS 54 MB, LiteRT 2.3 without its WebGPU accelerator 26 MB). TensorFlow, a compiler or
#: pip sneaking in would each go far past this.
MAX_ADDED_MB = 100
#: °C between the arm64 agent's forecasts (LiteRT's built-in kernels, under emulation) and this
#: host's (x86, XNNPACK) of the shipped dynamic-range bundle, whose activations are quantized at
#: run time by each kernel its own way: measured here at most 7.1e-4 over 177 windows of
#: room.csv (the targets' std is 1.4 °C).
ARCH_ATOL = 5e-3


def _emulation_options() -> list[str]:
    """Only under emulation: hide the host's CPUs from LiteRT's cpuinfo.

    qemu-user 7.2 passes the host's /sys through, cpuinfo reads x86 CPUs there and LiteRT
    crashes creating an interpreter (then hangs). On an arm64 host nothing is hidden.
    """
    if platform.machine() in ("aarch64", "arm64"):
        return []
    return ["--security-opt", "mask=/sys/devices/system/cpu"]


@dataclass
class Image:
    """The built image and the podman environment (private storage) it lives in."""

    tag: str
    env: dict[str, str]

    def podman(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def inspect(self, ref: str | None = None) -> dict[str, Any]:
        proc = self.podman("image", "inspect", ref or self.tag)
        assert proc.returncode == 0, proc.stderr
        data: dict[str, Any] = json.loads(proc.stdout)[0]
        return data

    def run(
        self, *args: str, options: tuple[str, ...] = (), timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``podman run --rm`` the image (arm64) with ``args``; the container is gone after."""
        name = f"sensorcast-test-{uuid.uuid4().hex[:8]}"
        try:
            return self.podman(
                *("run", "--rm", "--name", name, "--arch", "arm64", "--pull", "never"),
                *("--network", "none", "--health-interval", "disable"),
                *_emulation_options(),
                *options,
                self.tag,
                *args,
                timeout=timeout,
            )
        finally:
            self.podman("rm", "--force", "--volumes", "--time", "0", name)


def _script(name: str, *args: str, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run a deploy/image script; its last stdout line. Exit 3 means this host cannot."""
    cmd = [str(IMAGE_DIR / name), *args]
    proc = run_deploy(cmd, "the image cannot be built here", timeout, env)
    assert proc.returncode == 0, f"deploy/image/{name} failed:\n{proc.stderr[-3000:]}"
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    if os.geteuid() != 0:
        missing_tool("building the image needs root (buildah and podman with a private storage)")
    setup = run_deploy([str(IMAGE_DIR / "setup-host")], "the image cannot be built here", 600)
    assert setup.returncode == 0, setup.stderr
    env = dict(os.environ)
    for line in setup.stdout.splitlines():  # VAR=value: the private containers configuration
        name, _, value = line.partition("=")
        env[name] = value

    tag = f"localhost/sensorcast-test:{uuid.uuid4().hex[:8]}"
    try:
        assert _script("build", "--tag", tag, timeout=COLD_CACHE_TIMEOUT_S, env=env) == tag
        yield Image(tag, env)
    finally:
        img = Image(tag, env)
        img.podman("rmi", "--force", tag)
        assert img.podman("image", "exists", tag).returncode == 1


@pytest.fixture
def config_dir(tmp_path: Path, demo_dir: Path, topic_prefix: str) -> Path:
    """A config directory as a user mounts it at /etc/sensorcast: the file and its model."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "room.tflite").write_bytes((demo_dir / "room.tflite").read_bytes())
    agent_config(
        etc,
        port=1,  # the container run sets the real broker
        prefix=topic_prefix,
        streams=[topic_stream("room.tflite", f"{topic_prefix}/in/room")],
        name="sensorcast.toml",
    )
    # pytest makes directories 0700 for root: the image's user must be able to read these.
    for path in (etc, *etc.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return etc


def _mount(config_dir: Path) -> tuple[str, ...]:
    return ("--volume", f"{config_dir}:/etc/sensorcast:ro")


def test_image_metadata(image: Image) -> None:
    data = image.inspect()
    config = data["Config"]
    assert (data["Os"], data["Architecture"]) == ("linux", "arm64")
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["sensorcast"]
    assert config["Cmd"] == ["run", "--config", CONFIG]
    assert STATE in config["Volumes"]
    assert f"STATE_DIRECTORY={STATE}" in config["Env"]
    # buildah keeps HEALTHCHECK only in the docker format: the build must use it.
    assert data["Healthcheck"]["Test"] == ["CMD", "sensorcast", "health", "--config", CONFIG]

    base = image.inspect("docker.io/library/python:3.11-slim-bookworm")
    added_mb = (data["Size"] - base["Size"]) / 1e6
    assert 0 < added_mb < MAX_ADDED_MB, f"the image adds {added_mb:.0f} MB to its base"


def test_runs_as_its_user_with_only_the_agent(image: Image) -> None:
    probe = (
        "id -u; id -g; "
        "command -v cc gcc pip pip3 || echo no-tools; "
        "python3 -c 'import importlib.util as u; print([m for m in "
        '("tensorflow", "keras", "pip", "setuptools", "wheel") if u.find_spec(m)])\'; '
        f"touch /opt/sensorcast/x 2>/dev/null || echo venv-read-only; touch {STATE}/x && echo ok"
    )
    proc = image.run("-c", probe, options=("--entrypoint", "/bin/sh"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(UID), str(UID), "no-tools", "[]", "venv-read-only", "ok"]


def test_version_and_check(image: Image, config_dir: Path) -> None:
    proc = image.run("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"sensorcast {__version__}"), proc.stderr

    proc = image.run("check", "--config", CONFIG, options=_mount(config_dir))
    assert proc.returncode == 0, proc.stderr
    assert f"config {CONFIG}: ok" in proc.stdout
    assert "stream room: room@" in proc.stdout
    assert "runtime: litert" in proc.stdout

    # A broken config is one line and exit 2, as outside the container.
    (config_dir / "room.tflite").unlink()
    proc = image.run("check", "--config", CONFIG, options=_mount(config_dir))
    assert proc.returncode == 2
    assert "streams[0].model: file not found" in proc.stderr


def test_healthcheck_fails_without_a_running_agent(image: Image, config_dir: Path) -> None:
    test = image.inspect()["Healthcheck"]["Test"]
    assert test[0] == "CMD"
    proc = image.run(
        *test[2:],
        options=(*_mount(config_dir), "--entrypoint", test[1], "-e", "SENSORCAST_DEVICE_ID=pi-7"),
    )
    assert proc.returncode == 1, proc.stdout
    assert f"no health file {STATE}/health-pi-7.json: is the agent running" in proc.stderr


def _compose_agent() -> tuple[list[str], dict[str, str], list[str]]:
    """deploy/compose.yaml's agent service: its bind mounts, environment and named volumes."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        missing_tool("PyYAML is not installed (pip install pyyaml) to read deploy/compose.yaml")
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    agent = compose["services"]["agent"]
    assert agent["build"] == {"context": "..", "dockerfile": "Dockerfile.arm64"}

    def interpolate(value: str) -> str:  # ${NAME:-default} with nothing set
        return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)

    binds, named = [], []
    for spec in agent["volumes"]:
        source, target, *mode = interpolate(spec).split(":")
        if source.startswith((".", "/")):
            binds.append(":".join([str((REPO / "deploy" / source).resolve()), target, *mode]))
        else:
            assert source in compose["volumes"], source
            named.append(target)
    env = {k: interpolate(str(v)) for k, v in agent["environment"].items()}
    return binds, env, named


def test_compose_agent_service_passes_check_in_the_image(image: Image) -> None:
    """The config, models and environment compose.yaml gives the agent are what the image reads."""
    binds, env, named = _compose_agent()
    assert named == [STATE]
    options = ["--read-only"]
    for bind in binds:
        options += ["--volume", bind]
    for name, value in env.items():
        options += ["--env", f"{name}={value}"]
    proc = image.run("check", "--config", CONFIG, options=tuple(options))
    assert proc.returncode == 0, proc.stderr
    assert f"config {CONFIG}: ok (device pi-1, broker mqtt://mosquitto:1883)" in proc.stdout
    assert "stream room: room@" in proc.stdout


@pytest.fixture
def agent_container(image: Image) -> Iterator[Callable[..., str]]:
    """Start the image's default command detached; every container is removed at the end."""
    names: list[str] = []

    def start(*options: str) -> str:
        name = f"sensorcast-test-{uuid.uuid4().hex[:8]}"
        names.append(name)
        proc = image.podman(
            *("run", "--detach", "--name", name, "--arch", "arm64", "--pull", "never"),
            *("--health-interval", "disable"),  # no systemd here for podman's timers
            *_emulation_options(),
            *options,
            image.tag,
        )
        assert proc.returncode == 0, proc.stderr
        return name

    yield start
    for name in names:
        image.podman("rm", "--force", "--volumes", "--time", "0", name)


def test_agent_in_the_container_forecasts_and_is_healthy(
    image: Image,
    config_dir: Path,
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    demo_dir: Path,
    agent_container: Callable[..., str],
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/#")
    device = "pi-image"
    # Hardened as README.md and deploy/compose.yaml run it: a read-only root (not even a tmpfs
    # on /tmp, as with Docker's --read-only), no capabilities, settings from the environment.
    # The host network reaches the session's broker on the loopback.
    name = agent_container(
        *_mount(config_dir),
        *("--network", "host", "--read-only", "--read-only-tmpfs=false", "--cap-drop", "ALL"),
        *("--security-opt", "no-new-privileges"),
        *("--env", f"SENSORCAST_MQTT_URL=mqtt://127.0.0.1:{mosquitto.port}"),
        *("--env", f"SENSORCAST_DEVICE_ID={device}"),
    )
    status = f"{topic_prefix}/{device}/status"

    def logs() -> str:
        return image.podman("logs", name).stderr[-3000:]

    def said(payload: bytes) -> Callable[[list[tuple[str, bytes, bool]]], bool]:
        return lambda ms: any(t == status and p == payload for t, p, _ in ms)

    assert sub.wait_for(said(b"online"), timeout=60), logs()

    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:26]
    feeder = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"feeder-{uuid.uuid4().hex[:8]}")
    feeder.connect("127.0.0.1", mosquitto.port)
    feeder.loop_start()
    for ts, temperature, humidity in rows:
        payload = json.dumps({"ts": ts, "temperature": temperature, "humidity": humidity})
        feeder.publish(f"{topic_prefix}/in/room", payload, qos=1).wait_for_publish(5)
    feeder.loop_stop()
    feeder.disconnect()

    forecast_topic = f"{topic_prefix}/{device}/room/forecast"
    assert sub.wait_for(lambda ms: sum(t == forecast_topic for t, _, _ in ms) >= 2, 60), logs()
    forecasts = [json.loads(p) for p in sub.payloads("/room/forecast")]
    # The same windows forecast by this host's agent code: arm64 in the container agrees.
    host = Forecaster(read_bundle(demo_dir / "room.tflite"))
    by_ts = {float(ts): i for i, ts in enumerate(rows[:, 0])}
    for f in forecasts:
        end = by_ts[f["window_end"]]
        expected = host.predict(rows[end - 23 : end + 1, 1:].astype(np.float32))
        np.testing.assert_allclose(np.array(f["values"]), expected, atol=ARCH_ATOL)

    # The image's own HEALTHCHECK, run by podman in the running container: healthy.
    deadline = time.monotonic() + 30
    while (check := image.podman("healthcheck", "run", name)).returncode != 0:
        assert time.monotonic() < deadline, (check.stdout, check.stderr, logs())
        time.sleep(1)
    state = image.podman("inspect", "--format", "{{json .State.Health}}", name)
    health = json.loads(state.stdout)
    assert health["Status"] == "healthy"
    assert "healthy: 1 streams" in health["Log"][-1]["Output"]

    # docker stop / podman stop: SIGTERM, a clean exit that says offline.
    stop = image.podman("stop", "--time", "30", name, timeout=60)
    assert stop.returncode == 0, stop.stderr
    exit_code = image.podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    assert exit_code == "0", logs()
    assert sub.wait_for(said(b"offline"), timeout=10), logs()
