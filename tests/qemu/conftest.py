"""The arm64 machine for tests/qemu: a Debian bookworm chroot run under QEMU user emulation.

The ``arm64`` session fixture sets the host up (``deploy/qemu/setup-host``), gets the cached
rootfs (``deploy/qemu/rootfs``), wheelhouse (``deploy/qemu/wheels``) and virtual environments
(``deploy/qemu/env``), then installs this checkout's wheel into both environments with the
chroot's own pip, in a layer of this session's. Commands run through ``deploy/qemu/run``: every
mount lives in a private mount namespace and is gone when the command exits.

When emulation cannot be set up (not root, no binfmt_misc, no qemu-user-static), the tests fail
under CI=true and skip elsewhere, with the harness's one-line reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.host import missing_tool, run_deploy
from tests.support.paths import REPO

QEMU = REPO / "deploy" / "qemu"
#: The chroot's virtual environments (deploy/qemu/env), by runtime.
VENVS = {"litert": "/opt/sensorcast/litert", "tflite-runtime": "/opt/sensorcast/tflite"}
#: Cold cache: debootstrap (~3 min) and two venvs made by pip under emulation (~2 min) happen
#: in the first test's setup; pytest's default timeout would cut that short.
COLD_CACHE_TIMEOUT_S = 1200


@dataclass(frozen=True)
class Bind:
    """A host path mounted at ``target`` in the chroot."""

    source: Path
    target: str
    read_only: bool = False

    def spec(self) -> str:
        return f"{self.source}:{self.target}{':ro' if self.read_only else ''}"


@dataclass
class Arm64:
    """The arm64 chroot: the rootfs, the cached venvs and this session's sensorcast install."""

    rootfs: Path
    layers: list[Path]
    wheelhouse: Path

    def command(
        self,
        *argv: str,
        env: dict[str, str] | None = None,
        binds: Sequence[Bind] = (),
        cwd: str = "/",
        upper: Path | None = None,
    ) -> list[str]:
        """The host command that runs ``argv`` in the chroot.

        What it writes is thrown away at exit, or kept in ``upper`` (a layer for later runs).
        """
        cmd = [str(QEMU / "run"), "--rootfs", str(self.rootfs), "--cwd", cwd]
        if upper is not None:
            cmd += ["--upper", str(upper)]
        for layer in self.layers:
            cmd += ["--layer", str(layer)]
        for bind in binds:
            cmd += ["--bind", bind.spec()]
        for name, value in (env or {}).items():
            cmd += ["--env", f"{name}={value}"]
        return [*cmd, "--", *argv]

    def run(
        self, *argv: str, timeout: float = 300, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the chroot and capture its output."""
        return subprocess.run(
            self.command(*argv, **kwargs),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )


def _harness(script: str, *args: str, timeout: float) -> str:
    """Run a deploy/qemu script that prints a path; fail the session with its stderr if not."""
    proc = subprocess.run(
        [str(QEMU / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"deploy/qemu/{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def arm64(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arm64]:
    """The arm64 chroot with sensorcast installed from this checkout's wheel."""
    if os.geteuid() != 0:
        missing_tool("arm64 emulation needs root (binfmt_misc, mount namespaces, chroot)")
    setup = run_deploy([str(QEMU / "setup-host")], "arm64 emulation cannot be set up here", 600)
    assert setup.returncode == 0, setup.stderr

    rootfs = Path(_harness("rootfs", timeout=COLD_CACHE_TIMEOUT_S))
    wheelhouse = Path(_harness("wheels", timeout=600))
    env_layer = Path(_harness("env", str(wheelhouse), timeout=COLD_CACHE_TIMEOUT_S))
    (wheel,) = wheelhouse.glob("sensorcast-*.whl")

    # This session's layer: the checkout's wheel installed into both venvs by the chroot's pip.
    app = tmp_path_factory.mktemp("arm64") / "app"
    try:
        machine = Arm64(rootfs, [env_layer], wheelhouse)
        pip = "pip install -q --no-cache-dir --disable-pip-version-check --no-index --no-deps"
        install = [f"{venv}/bin/{pip} /wheels/{wheel.name}" for venv in VENVS.values()]
        proc = machine.run(
            "/bin/sh",
            "-euc",
            "\n".join(install),
            binds=[Bind(wheelhouse, "/wheels", True)],
            upper=app,
        )
        assert proc.returncode == 0, f"installing {wheel.name} in the chroot:\n{proc.stderr}"
        yield Arm64(rootfs, [app, env_layer], wheelhouse)
    finally:
        for path in (app, app.with_name("app.work")):
            shutil.rmtree(path, ignore_errors=True)
