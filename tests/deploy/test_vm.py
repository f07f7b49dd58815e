"""The whole Pi story, emulated: an arm64 Debian bookworm system booted in qemu-system-aarch64
with systemd as PID 1 (deploy/qemu/vm-image, vm-boot), deploy/install.sh run in it from the
arm64 wheelhouse, and sensorcast.service, with all its hardening, forecasting readings that the
host publishes to its own Mosquitto (reached from the guest at 10.0.2.2 through QEMU's user-mode
network).

What it shows: the hardened unit starts for real (Type=notify: ``systemctl restart`` in
install.sh returns only on READY=1), stays ``active (running)``, shows its STATUS, reads the
broker password through LoadCredential= (the broker here refuses anonymous clients), forecasts,
and stops cleanly. The guest reports over the serial console ("SENSORCAST-VM: ..." lines) and
the forecasts arrive over MQTT.

The config is provisioned before install.sh runs (as a fleet tool would; install.sh keeps it):
with the shipped example, which points at a broker on the device itself, install.sh's start of
the service fails on a machine without one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Callable

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.brokers import MosquittoBroker, free_port, wait_port
from tests.support.host import missing_tool, run_deploy
from tests.support.mqtt import Subscriber
from tests.support.paths import REPO

QEMU = REPO / "deploy" / "qemu"
PASSWORD = "vm-secret-7f3a"
ROWS = 30  #: readings published; a window holds 24, so ROWS - 23 forecasts
#: Seconds. Cold cache: the rootfs (~3 min), wheelhouse and VM image (~3 min) come first. Then
#: the guest, measured on 2 shared cores: boot 25-75 s, install.sh 3.7-4.7 min under TCG (its
#: venv's ensurepip alone 1.5-2.7 min), the rest 20 s.
SETUP_TIMEOUT_S = 1500
GUEST_TIMEOUT_S = 1200

# Runs in the guest as root (sensorcast-vm-payload.service) with bash; settings in /payload/env.
GUEST = r"""
set -u
. /payload/env
say() { echo "SENSORCAST-VM: $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }'; }
show() { systemctl show -p "$1" --value sensorcast; }
say "booted: pid1 $(cat /proc/1/comm), machine $(uname -m), kernel $(uname -r), uptime $(up) s"

# Provisioned before the install (install.sh keeps an existing config and password file).
install -d -m 0755 /etc/sensorcast /etc/sensorcast/models
install -m 0644 /payload/src/examples/demo/room.tflite /etc/sensorcast/models/room.tflite
install -m 0644 /payload/sensorcast.toml /etc/sensorcast/sensorcast.toml
install -m 0600 /payload/mqtt-password /etc/sensorcast/mqtt-password

t0=$(up)
# No byte-compiling of numpy and LiteRT under emulation (a minute; a Pi does it natively). Not
# PIP_NO_COMPILE=1: pip sets an option's destination to its variable's value, and --no-compile's
# is `compile`, so PIP_NO_COMPILE=1 means compile=1 (measured: it compiles).
PIP_COMPILE=0 bash /payload/src/deploy/install.sh --wheels /payload/wheels 2>&1
say "install.sh exit $? after $(since "$t0") s, uptime $(up) s"
say "is-active: $(systemctl is-active sensorcast)"
say "status-text: $(show StatusText)"
say "service ready"

# The host publishes readings now; wait until the status line counts them all as forecasts.
for _ in $(seq 150); do
    n=$(show StatusText | sed -n 's/.* \([0-9][0-9]*\) forecasts.*/\1/p')
    [ "${n:-0}" -lt "$FORECASTS" ] || break
    sleep 2
done
say "status-text: $(show StatusText)"
say "is-active: $(systemctl is-active sensorcast)"
for p in ActiveState SubState Result NRestarts Type WatchdogUSec; do
    say "unit $p=$(show "$p")"
done
# A WATCHDOG=1 after READY=1 moves the watchdog timestamp past the activation's.
active=$(show ActiveEnterTimestampMonotonic) dog=$(show WatchdogTimestampMonotonic)
if [ "$dog" -gt "$active" ]; then pinged=yes; else pinged="no ($dog <= $active)"; fi
say "watchdog pinged after ready: $pinged"
pid=$(show MainPID)
say "main pid $pid, user $(stat -c %U "/proc/$pid")"
grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' "/proc/$pid/status" | sed 's/^/SENSORCAST-VM: proc /'
say "uid_map: $(tr -s ' ' < "/proc/$pid/uid_map" | tr '\n' ';')"
say "credential: $(ls /run/credentials/sensorcast.service/ 2>&1 | tr '\n' ' ')"
say "$(systemd-analyze security sensorcast.service --no-pager 2>&1 | tail -1)"
systemctl status sensorcast --no-pager -l 2>&1 | sed 's/^/SENSORCAST-VM: status | /'

t0=$(up)
systemctl stop sensorcast
say "stopped: Result=$(show Result) ExecMainStatus=$(show ExecMainStatus) in $(since "$t0") s"
journalctl -u sensorcast -b --no-pager -o short-monotonic 2>&1 \
    | sed 's/^/SENSORCAST-VM: journal | /'
say "done, uptime $(up) s"
"""


class Console:
    """The guest's serial console (vm-boot's stdout): every line kept, markers waited for."""

    def __init__(self, stream: IO[str], log: Path) -> None:
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.seen: dict[str, float] = {}  #: marker -> seconds since start when first seen
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(stream, log), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str], log: Path) -> None:
        with stream, log.open("w") as out:
            for line in stream:
                out.write(line)
                out.flush()
                with self._cond:
                    self.lines.append(line.rstrip("\r\n"))
                    self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def markers(self) -> list[str]:
        """The guest's "SENSORCAST-VM: ..." reports so far, in order."""
        with self._cond:
            return [m.group(1).strip() for line in self.lines
                    if (m := re.search(r"SENSORCAST-VM: (.*)$", line))]  # fmt: skip

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str] | None:
        """The first marker matching ``pattern``, waiting until it comes, QEMU ends or timeout."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        with self._cond:
            while True:
                for marker in self.markers():
                    if match := rx.search(marker):
                        self.seen.setdefault(pattern, time.monotonic() - self.started)
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return None
                self._cond.wait(min(left, 5))

    def tail(self, n: int = 120) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])


def _tool(script: str, timeout: float) -> str:
    """Run a deploy/qemu script that prints a path; missing_tool when it cannot be set up."""
    done = run_deploy([str(QEMU / script)], "the arm64 VM cannot be set up here", timeout)
    assert done.returncode == 0, f"deploy/qemu/{script}:\n{done.stderr[-3000:]}"
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, int]]:
    """A Mosquitto on the host's loopback with two listeners: the one the guest uses accepts
    only user pi with PASSWORD; the host's own clients use the second, anonymous one."""
    binary, tool = MosquittoBroker.find(), shutil.which("mosquitto_passwd")
    if binary is None or tool is None:
        missing_tool(
            "mosquitto (with mosquitto_passwd) is not installed: apt-get install mosquitto"
        )
    assert binary is not None and tool is not None
    passwd = tmp_path / "passwd"
    subprocess.run([tool, "-b", "-c", str(passwd), "pi", PASSWORD], check=True, timeout=30)
    passwd.chmod(0o644)
    host_port = free_port()
    mosquitto = MosquittoBroker(
        binary,
        conf="per_listener_settings true\n"
        f"listener {{port}} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
        f"listener {host_port} 127.0.0.1\nallow_anonymous true\n",
    )
    mosquitto.start()
    assert wait_port(host_port, 10), mosquitto.log.read_text()
    yield mosquitto, host_port
    mosquitto.close()


def _example_config(port: int, device: str, input_topic: str) -> str:
    """deploy/sensorcast.toml, edited as its comments say: the host's broker, a device id,
    an input topic, and the broker password as the systemd credential ``mqtt-password``."""
    text = (REPO / "deploy" / "sensorcast.toml").read_text()
    edits: list[tuple[str, str]] = [
        (r'(?m)^url = "[^"]*"', f'url = "mqtt://10.0.2.2:{port}"'),
        (r'(?m)^id = "[^"]*"', f'id = "{device}"'),
        (r'(?m)^input_topic = "[^"]*"', f'input_topic = "{input_topic}"'),
        (r'(?m)^# (username = "pi")', r"\1"),
        (r'(?m)^# (password_credential = "mqtt-password")', r"\1"),
    ]
    for pattern, replacement in edits:
        text, n = re.subn(pattern, replacement, text)
        assert n == 1, f"deploy/sensorcast.toml no longer has one line matching {pattern}"
    return text


def _payload(directory: Path, wheels: Path, port: int, device: str, input_topic: str) -> Path:
    """The guest's second disk: the files install.sh uses, the wheelhouse, config, script."""
    src = directory / "src"
    (src / "deploy").mkdir(parents=True)
    (src / "examples" / "demo").mkdir(parents=True)
    for name in ("install.sh", "sensorcast.service", "sensorcast.toml"):
        shutil.copy2(REPO / "deploy" / name, src / "deploy" / name)
    shutil.copy2(REPO / "examples" / "demo" / "room.tflite", src / "examples" / "demo")
    shutil.copytree(wheels, directory / "wheels", copy_function=_link_or_copy)
    (directory / "sensorcast.toml").write_text(_example_config(port, device, input_topic))
    (directory / "mqtt-password").write_text(PASSWORD + "\n")
    (directory / "env").write_text(f"FORECASTS={ROWS - 23}\n")
    (directory / "run").write_text(GUEST)
    return directory


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _publish_readings(port: int, topic: str) -> None:
    rows = np.loadtxt(REPO / "examples" / "demo" / "room.csv", delimiter=",", skiprows=1)[:ROWS]
    feeder = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"feeder-{uuid.uuid4().hex[:8]}")
    feeder.connect("127.0.0.1", port)
    feeder.loop_start()
    try:
        for ts, temperature, humidity in rows:
            payload = json.dumps({"ts": ts, "temperature": temperature, "humidity": humidity})
            feeder.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        feeder.loop_stop()
        feeder.disconnect()


def _exited(proc: subprocess.Popen[str]) -> int | None:
    """vm-boot's exit status, or None while it runs (its console may close just before)."""
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop vm-boot and its QEMU (their own process group) if they still run."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


@pytest.mark.qemu
@pytest.mark.mqtt
@pytest.mark.timeout(SETUP_TIMEOUT_S + GUEST_TIMEOUT_S)
def test_install_sh_and_the_hardened_unit_in_an_arm64_vm(
    tmp_path: Path,
    broker: tuple[MosquittoBroker, int],
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    if os.geteuid() != 0:
        missing_tool(
            "the arm64 VM needs root (apt-get for QEMU, chroot and overlayfs for its image)"
        )
    image = _tool("vm-image", SETUP_TIMEOUT_S)
    wheels = Path(_tool("wheels", 600))

    mosquitto, host_port = broker
    device = f"vm{uuid.uuid4().hex[:8]}"
    input_topic = f"{device}/in/room"
    forecasts = f"sensorcast/{device}/room/forecast"
    payload = _payload(tmp_path / "payload", wheels, mosquitto.port, device, input_topic)
    sub = subscriber_factory(host_port, f"sensorcast/{device}/#")

    started = time.monotonic()
    proc = subprocess.Popen(
        [str(QEMU / "vm-boot"), "--image", image, "--payload", str(payload),
         "--workdir", str(tmp_path / "vm"), "--timeout", str(GUEST_TIMEOUT_S)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace", start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    console = Console(proc.stdout, tmp_path / "console.log")
    try:

        def report() -> str:
            return f"console ({tmp_path / 'console.log'}):\n{console.tail()}"

        booted = console.wait_for(r"^booted: pid1 (\S+), machine (\S+),", GUEST_TIMEOUT_S)
        if booted is None and _exited(proc) == 3:  # vm-boot: QEMU cannot be set up here
            missing_tool(f"the arm64 VM cannot boot here: {console.tail(1)}")
        assert booted, report()
        boot_s = time.monotonic() - started
        assert booted.groups() == ("systemd", "aarch64"), report()

        # install.sh's `systemctl restart` returns once the agent sent READY=1 (Type=notify).
        ready = console.wait_for(r"^service ready", GUEST_TIMEOUT_S)
        install = console.wait_for(r"^install\.sh exit (\d+)", 0)
        assert ready and install and install.group(1) == "0", report()
        assert "kept your /etc/sensorcast/sensorcast.toml" in console.tail(100_000), report()
        ready_s = time.monotonic() - started
        # The agent publishes its retained "online" after subscribing: safe to feed it now.
        assert sub.wait_for(
            lambda ms: any(t.endswith("/status") and p == b"online" for t, p, _ in ms), 60
        ), report()
        _publish_readings(host_port, input_topic)
        expected = ROWS - 23
        assert sub.wait_for(lambda _: len(sub.payloads(forecasts)) >= expected, 300), report()
        first = json.loads(sub.payloads(forecasts)[0])
        assert len(first["values"]) == 12, first

        assert proc.wait(timeout=GUEST_TIMEOUT_S) == 0, report()
        total_s = time.monotonic() - started
        markers = console.markers()
        text = "\n".join(markers)
        assert any(m.startswith("done") for m in markers), report()
        # systemd's view of the unit while it forecast, under all of its hardening.
        assert "is-active: active" in markers, report()
        for prop in ("ActiveState=active", "SubState=running", "Type=notify", "NRestarts=0"):
            assert f"unit {prop}" in markers, report()
        status = [m for m in markers if m.startswith("status-text:")]
        assert re.search(rf"^status-text: 1 streams?, {expected} forecasts", status[-1]), report()
        assert "watchdog pinged after ready: yes" in markers, report()
        assert "credential: mqtt-password" in text, report()
        assert re.search(r"proc NoNewPrivs:\s+1$", text, re.M), report()
        assert re.search(r"proc Seccomp:\s+2$", text, re.M), report()
        assert re.search(r"proc CapEff:\s+0+$", text, re.M), report()
        assert "stopped: Result=success ExecMainStatus=0" in text, report()
        assert not re.search(r"journal \|.*(Traceback|SIGSYS|core-dump)", text), report()
        assert "payload exit 0" in text, report()
        # Stopped cleanly: its last word on the status topic is "offline".
        assert sub.wait_for(
            lambda ms: [p for t, p, _ in ms if t.endswith("/status")][-1:] == [b"offline"], 30
        ), [m for m in sub.messages if m[0].endswith("/status")]
        print(
            f"arm64 VM: booted in {boot_s:.0f} s, install.sh done and the unit ready at "
            f"{ready_s:.0f} s, powered off at {total_s:.0f} s"
        )
    finally:
        _stop(proc)
