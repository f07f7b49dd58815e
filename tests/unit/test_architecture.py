"""The architecture's rules, checked on the installed package: the import contracts in
pyproject.toml (import-linter), module size, function complexity (ruff's C901) and the
wheel's layout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.paths import REPO

MAX_LINES = 400  #: No module of agent/ or convert/ longer than this.
MAX_COMPLEXITY = 10  #: No function of agent/, convert/ or bench/ more complex (McCabe).


def _lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    assert exe.exists(), "lint-imports is missing: scripts/setup-venv installs the dev extra"
    return subprocess.run(
        [str(exe), str(config), "--no-cache"], capture_output=True, text=True, cwd=REPO,
        timeout=300, check=False,
    )  # fmt: skip


def test_import_contracts_are_kept() -> None:
    done = _lint_imports(REPO / "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_the_contracts_are_not_vacuous(tmp_path: Path) -> None:
    """A module of the agent that imports the converter, and a two-module cycle, break the
    contracts: they resolve real modules, not names that can never match."""
    probes = {
        "_probe_heavy": "import sensorcast.convert.cli\n",
        "_probe_cycle_a": "import sensorcast.agent._probe_cycle_b\n",
        "_probe_cycle_b": "import sensorcast.agent._probe_cycle_a\n",
    }
    for name, body in probes.items():
        (REPO / "agent" / f"{name}.py").write_text(body)
    try:
        # The link tree of a strict editable install (or a wheel) holds only what was there
        # at install time: check the probes through the checkout itself.
        done = subprocess.run(
            [sys.executable, "-c", _LINT_CHECKOUT, str(REPO)], capture_output=True, text=True,
            timeout=300, check=False, cwd=tmp_path,
        )  # fmt: skip
    finally:
        for name in probes:
            (REPO / "agent" / f"{name}.py").unlink()
    assert "sensorcast.agent._probe_heavy -> sensorcast.convert.cli" in done.stdout, done.stdout
    assert "_probe_cycle_a" in done.stdout, done.stdout
    assert "Contracts: 0 kept, 2 broken." in done.stdout, done.stdout


#: Runs import-linter's contracts from pyproject.toml on the checkout's folders, mapped to
#: their installed names through a temporary ``sensorcast`` folder of symlinks.
_LINT_CHECKOUT = """
import os, sys, tempfile
repo = sys.argv[1]
root = tempfile.mkdtemp()
os.mkdir(os.path.join(root, "sensorcast"))
for name in ("agent", "convert"):
    os.symlink(os.path.join(repo, name), os.path.join(root, "sensorcast", name))
sys.path.insert(0, root)
sys.argv = ["lint-imports", os.path.join(repo, "pyproject.toml"), "--no-cache",
            "--show-timings"]
from importlinter.cli import lint_imports_command
lint_imports_command()
"""


def test_no_module_over_400_lines() -> None:
    long = [
        f"{path.relative_to(REPO)}: {n} lines"
        for folder in ("agent", "convert")
        for path in sorted((REPO / folder).rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert long == []


def _ruff_c901(*paths: str | Path) -> subprocess.CompletedProcess[str]:
    """ruff's complexity rule alone, with the project's settings (pyproject.toml)."""
    exe = Path(sys.executable).with_name("ruff")
    assert exe.exists(), "ruff is missing: scripts/setup-venv installs the dev extra"
    return subprocess.run(
        [str(exe), "check", "--config", str(REPO / "pyproject.toml"), "--select", "C901",
         "--no-cache", "--output-format", "concise", *map(str, paths)],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip


def test_no_function_over_complexity_10() -> None:
    done = _ruff_c901("agent", "convert", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


def _branches(name: str, n: int) -> str:
    """Source of a function of ``n`` ifs: cyclomatic complexity ``n + 1``."""
    ifs = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(n))
    return f"def {name}(x: int) -> int:\n{ifs}    return -1\n\n\n"


def test_the_complexity_check_is_not_vacuous(tmp_path: Path) -> None:
    """With the project's settings, ruff flags a function one branch over the limit and
    passes one at it: the rule is on and the limit is 10."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        _branches("at_limit", MAX_COMPLEXITY - 1) + _branches("over_limit", MAX_COMPLEXITY)
    )
    done = _ruff_c901(probe)
    assert done.returncode == 1, done.stdout + done.stderr
    flagged = [line for line in done.stdout.splitlines() if "C901" in line]
    assert len(flagged) == 1, done.stdout
    assert f"`over_limit` is too complex ({MAX_COMPLEXITY + 1} > {MAX_COMPLEXITY})" in flagged[0]


def test_the_wheel_installs_sensorcast_and_nothing_generic(tmp_path: Path) -> None:
    """`pip install .` gives sensorcast.agent and sensorcast.convert, and no top-level
    ``agent`` or ``convert`` that would collide with other projects."""
    if shutil.which("git") is None:
        pytest.fail("git is needed to copy the checkout")
    src = tmp_path / "src"
    src.mkdir()
    # The checkout's files as git sees them (no build/, .venv or caches), new files included
    # and files deleted from the work tree (not yet from git's index) left out.
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, check=True,
        timeout=120, cwd=REPO,
    ).stdout  # fmt: skip
    for name in filter(None, listed.split(b"\0")):
        path = REPO / os.fsdecode(name)
        if path.is_file():  # a symlink is copied as the file it points at, as cp does
            (src / path.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / path.relative_to(REPO))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
         str(src)],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("sensorcast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"sensorcast"}
    assert "sensorcast/agent/cli.py" in names and "sensorcast/convert/cli.py" in names
    assert "sensorcast/agent/py.typed" in names
    assert not any(n.startswith("sensorcast/__init__") for n in names)  # a namespace
    # Installed alone (no dependencies needed to find modules): importable by its name only.
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    probe = (
        "import importlib.util as u, sys; sys.path[:] = [sys.argv[1]] + sys.path[1:];"
        "print(u.find_spec('agent') is None, u.find_spec('convert') is None,"
        " u.find_spec('sensorcast.agent.cli').origin)"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(target)], capture_output=True, text=True,
        check=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    no_agent, no_convert, origin = done.stdout.split()
    assert (no_agent, no_convert) == ("True", "True")
    assert origin.startswith(str(target))
