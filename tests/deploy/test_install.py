"""deploy/install.sh for real, in an arm64 Debian bookworm chroot under QEMU: installs from the
arm64 wheelhouse, the service user can check the example config, a second run keeps the
user's config, and uninstall (then --purge) removes what it should."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.host import run_deploy
from tests.support.paths import REPO

SCRIPT = r"""
set -eux
bash /src/deploy/install.sh --wheels /wheels
echo "machine=$(/opt/sensorcast/bin/python -c 'import platform; print(platform.machine())')"
id sensorcast
as_user="runuser -u sensorcast -- /opt/sensorcast/bin/sensorcast"
$as_user check --config /etc/sensorcast/sensorcast.toml
$as_user health --config /etc/sensorcast/sensorcast.toml && exit 91
echo "state=$(stat -c '%U:%G %a' /var/lib/sensorcast)"
echo "password=$(stat -c '%U %a %s' /etc/sensorcast/mqtt-password)"
cmp /src/deploy/sensorcast.service /etc/systemd/system/sensorcast.service
echo '# edited by the user' >> /etc/sensorcast/sensorcast.toml
bash /src/deploy/install.sh --wheels /wheels
grep -q '^# edited by the user' /etc/sensorcast/sensorcast.toml && echo "config kept"
bash /src/deploy/install.sh --uninstall
id sensorcast 2>/dev/null && exit 92
test -e /opt/sensorcast && exit 93
test -e /etc/systemd/system/sensorcast.service && exit 94
test -e /etc/sensorcast/sensorcast.toml && echo "config survives uninstall"
bash /src/deploy/install.sh --uninstall --purge
test -e /etc/sensorcast && exit 95
test -e /var/lib/sensorcast && exit 96
echo "all done"
"""


def _tool(cmd: list[str]) -> str:
    done = run_deploy(cmd, "QEMU arm64 emulation cannot be set up here", 1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.qemu
@pytest.mark.timeout(1200)  # a cold cache builds the rootfs and wheelhouse first
def test_install_sh_in_an_arm64_rootfs(tmp_path: Path) -> None:
    wheels = _tool([str(REPO / "deploy/qemu/wheels")])
    # PIP_COMPILE=0: byte-compiling numpy under emulation costs minutes; a Pi does it natively.
    # (Not PIP_NO_COMPILE=1: pip inverts "no-" options read from the environment.)
    run = [str(REPO / "deploy/qemu/run"), "--bind", f"{REPO}:/src:ro", "--bind",
           f"{wheels}:/wheels:ro", "--env", "PIP_COMPILE=0", "--", "/bin/bash", "-c",
           SCRIPT]  # fmt: skip
    done = run_deploy(run, "QEMU arm64 emulation cannot be set up here", 600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "machine=aarch64" in out  # really arm64, not the host
    assert "config ok" in out or ": ok (device pi" in out
    assert "no health file" in out  # the service is not running in a chroot: unhealthy
    assert "state=sensorcast:sensorcast 750" in out
    assert "password=root 600 0" in out
    assert "config kept" in out and "kept your /etc/sensorcast/sensorcast.toml" in out
    assert "config survives uninstall" in out
    assert "all done" in out
