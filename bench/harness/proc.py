"""What a process costs: RSS and peak RSS, CPU seconds; the machine's load; waiting."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

__all__ = ["cpu_seconds", "load_avg", "proc_status", "rss_kb_self", "rss_mb", "wait_for"]


def proc_status(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, MB; empty once it is gone."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid``, MB (0 once it is gone)."""
    return proc_status(pid).get("VmRSS", 0.0)


def rss_kb_self() -> int:
    """This process's resident set size, KiB (Linux; 0 elsewhere)."""
    return int(proc_status(os.getpid()).get("VmRSS", 0.0) * 1024)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (all its threads); 0 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def load_avg() -> str:
    """The 1, 5 and 15 minute load averages, as the results files print them."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def wait_for(pred: Callable[[], bool], timeout_s: float, every_s: float = 0.005) -> bool:
    """Poll ``pred`` until it holds or ``timeout_s`` passed; its last answer."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every_s)
    return pred()
