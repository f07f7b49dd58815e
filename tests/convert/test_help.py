"""Every build-time command prints its help: argparse formats help strings with ``%``, so a
literal percent sign in one (``2% of``) crashed ``sensorcast convert --help`` once."""

from __future__ import annotations

import pytest

from tests.support.agents import run_cli

pytestmark = pytest.mark.convert


@pytest.mark.parametrize("command", ["convert", "train", "evaluate", "norm"])
def test_help_prints_for_every_build_time_command(command: str) -> None:
    done = run_cli(command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: sensorcast {command}")
    assert "%%" not in done.stdout and "Traceback" not in done.stderr
