"""The two agent trees of a before/after run: ``--baseline REF``'s and this checkout's.

Both are copies made at the start of the run (``git archive`` of REF; a copy of the
checkout's ``agent/``), so edits in the checkout while the run goes on do not blur it. A tree
is put first on ``sys.path`` (children, :func:`use_tree`) or ``PYTHONPATH`` (``sensorcast run``,
:func:`check_env`), and both check that the agent imported is the tree's. Trees from
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

__all__ = ["Tree", "baseline", "check_env", "snapshot", "use_tree"]

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
    """In a child: import the agent from ``spec["tree"]``; its package name.

    The tree goes first on ``sys.path``. The bench's own modules may have imported the
    installed agent already (the strict editable install links it under
    ``build/__editable__.*``): those modules are dropped first, so that the import below
    finds the tree's (``sensorcast`` is a namespace package whose portions follow
    ``sys.path``). The check stays: a tree that still does not win is an error.
    """
    import importlib

    root, package = spec["tree"], spec["package"]
    sys.path.insert(0, root)
    importlib.invalidate_caches()
    _forget(package, Path(root).resolve())
    module = importlib.import_module(package)
    where = Path(module.__file__ or "").resolve()
    if not where.is_relative_to(Path(root).resolve()):
        raise RuntimeError(f"{package} imported from {where}, not from the tree {root}")
    return str(package)


def _forget(package: str, root: Path) -> None:
    """Drop ``package`` and its submodules from ``sys.modules`` unless they come from ``root``."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        where = getattr(sys.modules[name], "__file__", None)
        if where is None or not Path(where).resolve().is_relative_to(root):
            del sys.modules[name]


_checked: set[tuple[str, str]] = set()


def check_env(tree: Tree, python: str) -> None:
    """Fail unless ``python`` with :meth:`Tree.env` imports the agent from the tree (as
    ``sensorcast run`` will); once per tree and Python."""
    if (str(tree.root), python) in _checked:
        return
    code = f"import {tree.package} as m; print(m.__file__)"
    out = subprocess.run(
        [python, "-c", code], env=tree.env(), cwd="/", capture_output=True, text=True, check=False
    )
    where = Path(out.stdout.strip() or "?").resolve()
    if out.returncode != 0 or not where.is_relative_to(tree.root.resolve()):
        why = out.stderr.strip().splitlines()[-1:] or [str(where)]
        raise RuntimeError(f"{tree.package} run by {python} imports {why[0]}, not {tree.root}")
    _checked.add((str(tree.root), python))


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=True).stdout
