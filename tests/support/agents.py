"""The agent and its CLI in child processes, as users and services run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["AGENT", "run_cli", "start_agent"]

#: ``sensorcast`` as the installed package runs it, in this interpreter.
AGENT = (sys.executable, "-m", "sensorcast.agent")


def start_agent(config: Path, **popen_kwargs: Any) -> subprocess.Popen[str]:
    """``sensorcast run --config CONFIG`` in a fresh interpreter, in text mode.

    By default stdin is a pipe (for stdin sources), stdout is dropped and stderr captured
    (read it with ``communicate``); ``popen_kwargs`` override those or add to them (``env``,
    ``stderr=a_log_file``: a file cannot fill up and stall the agent as an unread pipe can).
    """
    options: dict[str, Any] = {
        "stdin": subprocess.PIPE,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.PIPE,
        **popen_kwargs,
    }
    return subprocess.Popen([*AGENT, "run", "--config", str(config)], text=True, **options)


def run_cli(*args: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``sensorcast ARGS`` in a fresh interpreter to the end, capturing its output."""
    return subprocess.run(
        [*AGENT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
        **kwargs,
    )
