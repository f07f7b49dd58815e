"""What this host can do: tools a test needs, deploy scripts that may not run here, a disk to
fill."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NoReturn, Optional

__all__ = ["IN_CI", "fill_disk", "missing_tool", "run_deploy"]

#: Under CI every tool must be there: a missing one fails the test instead of skipping it.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_tool(what: str) -> NoReturn:
    """Fail in CI (the tool must be installed there), skip elsewhere, with one message."""
    import pytest  # here, not at the top: benches import tests.support without pytest

    if IN_CI:
        pytest.fail(f"{what} (CI=true: .ci/run must install it)")
    pytest.skip(what)


def run_deploy(
    cmd: list[str], what: str, timeout: float, env: Optional[dict[str, str]] = None
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


def fill_disk(mount: Path) -> None:
    """Write a file (``mount/filler``) until the filesystem at ``mount`` has no space left."""
    try:
        with (mount / "filler").open("wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass  # ENOSPC: full
