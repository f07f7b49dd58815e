"""The two agent trees of a before/after run: ``--baseline REF``'s and this checkout's.

Both are copies made at the start of the run (``git archive`` of REF; a copy of the
checkout's ``agent/``), so edits in the checkout while the run goes on do not blur it. A tree
is put first on ``sys.path`` (children) or ``PYTHONPATH`` (``sensorcast run``). Trees from
before the package rename (c4dd723 and older) install ``agent/`` as the top-level package
``agent``; later ones as ``sensorcast.agent`` (a namespace package, so a tree's
``sensorcast/agent`` shadows the installed one and ``sensorcast.convert`` still imports).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bench.harness.paths import REPO

__all__ = ["Tree", "baseline", "snapshot", "use_tree"]

RENAMED = "sensorcast.agent"  #: the package name since the rename (issue 14)
LEGACY = "agent"  #: the top-level package name before it


@dataclass(frozen=True)
class Tree:
    """An agent tree: ``root`` goes on the path, ``package`` is what to import or ``-m`` run."""

    side: str  #: "before" or "after"
    root: Path
    package: str
    rev: str  #: the commit (short hash), or "checkout"

    @property
    def folder(self) -> Path:
        """Where the tree's ``agent/`` files are."""
        return self.root.joinpath(*self.package.split("."))

    def spec(self, root: Optional[str] = None) -> dict[str, str]:
        """What a child needs to import this tree (``root`` as the child sees it)."""
        return {"tree": root or str(self.root), "package": self.package}

    def env(self, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
        """The environment of a ``sensorcast run`` on this tree."""
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.root)
        env.pop("SENSORCAST_RUNTIME", None)
        env.update(extra or {})
        return env


def snapshot(dest: Path) -> Tree:
    """This checkout's ``agent/``, copied to ``dest`` as ``sensorcast.agent`` ("after")."""
    shutil.rmtree(dest, ignore_errors=True)
    target = dest / "sensorcast" / "agent"
    shutil.copytree(REPO / "agent", target, ignore=shutil.ignore_patterns("__pycache__"))
    return Tree("after", dest, RENAMED, "checkout")


def baseline(ref: str, dest: Path) -> Tree:
    """``ref``'s ``agent/``, extracted to ``dest`` under the package name it had ("before")."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    rev = _git("rev-parse", "--short", ref).decode().strip()
    package = (
        RENAMED if f'"{RENAMED}"' in _git("show", f"{rev}:pyproject.toml").decode() else LEGACY
    )
    target = dest.joinpath(*package.split(".")[:-1])
    target.mkdir(parents=True, exist_ok=True)
    archive = _git("archive", rev, "agent")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return Tree("before", dest, package, rev)


def use_tree(spec: dict[str, Any]) -> str:
    """In a child: import the agent from ``spec["tree"]``; its package name."""
    import importlib

    root, package = spec["tree"], spec["package"]
    sys.path.insert(0, root)
    module = importlib.import_module(package)
    where = Path(module.__file__ or "").resolve()
    if not where.is_relative_to(Path(root).resolve()):
        raise RuntimeError(f"{package} imported from {where}, not from the tree {root}")
    return str(package)


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=True).stdout
