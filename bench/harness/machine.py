"""What a results file says about the machine it was measured on."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.harness.paths import REPO

__all__ = [
    "cpu_model",
    "git_commit",
    "host_summary",
    "memory_gib",
    "packages",
    "python_env",
    "usable_cores",
]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> str:
    """Total RAM, e.g. ``24 GiB`` (``?`` if unknown)."""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return "?"
    return f"{kb / 1024 / 1024:.0f} GiB"


def usable_cores() -> int:
    """Cores this process may run on (its affinity), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 0


def packages(dists: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``dists`` (the ones not installed are left out)."""
    out: dict[str, str] = {}
    for dist in dists:
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def python_env(python: Path, probe: str) -> str:
    """The line ``probe`` prints in another venv's Python, or why it could not run."""
    if not python.exists():
        return "not available"
    proc = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"broken: {proc.stderr.strip().splitlines()[-1:]}"
    return proc.stdout.strip()


def git_commit(paths: Iterable[str]) -> str:
    """``HEAD`` as ``hash date subject``, noting uncommitted changes under ``paths``."""
    git = ["git", "-C", str(REPO)]
    try:
        head = subprocess.run(
            [*git, "log", "-1", "--format=%h %ci %s"], capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", *paths],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown"
    if not head:
        return "unknown"
    return head + (f" (with uncommitted changes in {' or '.join(paths)})" if dirty else "")


def host_summary() -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python and the date, for a results file's header."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory": memory_gib(),
        "system": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
