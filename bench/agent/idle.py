"""Issue 18 target 4, idle: what ``sensorcast run`` costs with one stream and no readings.

The agent runs against the run's Mosquitto with one MQTT stream on the demo bundle and
nobody publishing to it. Once it is online (its retained ``online`` received) and has
settled, over a span (60 s, 20 s with ``--quick``) the process's CPU time (``utime +
stime`` of ``/proc/PID/stat``, all threads) and its wakeups (voluntary and involuntary
context switches summed over ``/proc/PID/task/*/status``; per thread too) are read at the
span's start and end: % of one core and wakeups per second, before and after.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

from bench.agent.common import start_agent
from bench.agent.context import Run
from bench.agent.trees import Tree
from bench.harness.broker import subscriber
from bench.harness.markdown import table
from bench.harness.proc import cpu_seconds, wait_for

__all__ = ["CPU_TARGET", "WAKEUPS_TARGET", "measure", "measure_idle", "render", "targets"]

CPU_TARGET = 0.05  #: % of one core, at most
WAKEUPS_TARGET = 1.0  #: wakeups per second, at most
SETTLE_S = 3.0  #: after ``online``, before the span starts (start-up's turns are over)


def idle_config(path: Path, port: int, bundle: Path, device: str) -> Path:
    """One live MQTT stream on ``bundle`` (the defaults: wall-clock closing, metrics every
    60 s), state next to ``path`` and starting empty."""
    state = path.parent / f"state-{device}"
    shutil.rmtree(state, ignore_errors=True)
    path.write_text(
        f'[device]\nid = "{device}"\n[state]\ndir = "{state}"\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\n'
        f'[[streams]]\nname = "s0"\nmodel = "{bundle}"\ninput_topic = "idle/{device}"\n'
    )
    return path


def run_ns(pid: int) -> Optional[int]:
    """Nanoseconds ``pid``'s threads have run (``/proc/PID/task/*/schedstat``: finer than
    the clock ticks of ``stat``); None without schedstats."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # the thread ended
                total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def threads(pid: int) -> dict[int, tuple[str, int]]:
    """Each thread of ``pid``: (name, voluntary + involuntary context switches so far);
    the main thread is named ``main``."""
    out: dict[int, tuple[str, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines())
        except (OSError, ValueError):
            continue  # the thread ended
        tid = int(task.name)
        name = "main" if tid == pid else f"{fields.get('Name', '?').strip()}-{tid}"
        switches = int(fields.get("voluntary_ctxt_switches", 0)) + int(
            fields.get("nonvoluntary_ctxt_switches", 0)
        )
        out[tid] = (name, switches)
    return out


def sample(pid: int, span_s: float) -> dict[str, Any]:
    """CPU % of one core and wakeups per second of ``pid`` over ``span_s`` seconds."""
    cpu0, ns0, th0, t0 = cpu_seconds(pid), run_ns(pid), threads(pid), time.monotonic()
    time.sleep(span_s)
    cpu1, ns1, th1, t1 = cpu_seconds(pid), run_ns(pid), threads(pid), time.monotonic()
    wall = t1 - t0
    ran = None if ns0 is None or ns1 is None else (ns1 - ns0) / 1e9
    per: dict[str, float] = {}
    for tid, (name, after) in th1.items():
        before = th0.get(tid, (name, 0))[1]
        per[name] = (after - before) / wall
    return {
        "span_s": wall,
        "cpu_s": cpu1 - cpu0,
        "cpu_pct": 100.0 * (cpu1 - cpu0) / wall,
        "ran_s": ran,  # from schedstat, ns resolution
        "ran_pct": None if ran is None else 100.0 * ran / wall,
        "wakeups_per_s": sum(per.values()),
        "per_thread": per,
        "clock_tick_s": 1.0 / os.sysconf("SC_CLK_TCK"),
    }


def measure_idle(
    port: int, python: str, tree: Tree, bundle: Path, work: Path, tag: str, span_s: float
) -> dict[str, Any]:
    """Start the agent on ``tree``, wait until it is online and settled, sample it."""
    device = f"idle-{tag}"
    client, got = subscriber(port, f"sensorcast/{device}/status")
    proc = start_agent(tree, python, idle_config(work / f"{device}.toml", port, bundle, device))
    try:
        if not wait_for(lambda: any(p == b"online" for _, p in got), 30):
            return {"error": "no online message within 30 s"}
        time.sleep(SETTLE_S)
        out = sample(proc.pid, span_s)
        out["alive"] = proc.poll() is None
        return out
    finally:
        proc.terminate()
        proc.wait(30)
        client.publish(f"sensorcast/{device}/status", b"", retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()


def measure(run: Run) -> None:
    """Both trees, one after the other, on the demo bundle."""
    bundle = Path(str(run.bundles()["demo"]))
    span = 20.0 if run.quick else 60.0
    run.r["idle"] = {
        side: measure_idle(run.port, sys.executable, tree, bundle, run.work, side, span)
        for side, tree in run.trees.items()
    }


def _fmt(d: Optional[dict[str, Any]], key: str, fmt: str) -> str:
    if not d or d.get(key) is None:
        return str((d or {}).get("error", "-"))
    return fmt.format(d[key])


def render(r: dict[str, Any]) -> list[str]:
    """The idle section."""
    got = r.get("idle") or {}
    rows = [
        [side, _fmt(d, "span_s", "{:.0f} s"), _fmt(d, "cpu_pct", "{:.3f} %"),
         _fmt(d, "ran_pct", "{:.4f} %"),
         _fmt(d, "wakeups_per_s", "{:.2f}"),
         ", ".join(f"{k} {v:.2f}" for k, v in sorted((d or {}).get("per_thread", {}).items())
                   if v >= 0.005) or "-"]
        for side, d in got.items()
    ]  # fmt: skip
    return [
        "## Idle: `sensorcast run`, one stream, no readings",
        "",
        "One MQTT stream on the demo bundle, nothing published to it; after `online` and "
        f"{SETTLE_S:g} s, over the span: the process's CPU time (utime + stime, all threads) "
        "as % of one core, and its context switches (voluntary + involuntary, all threads) per "
        f"second. Targets: at most {CPU_TARGET:g} % and {WAKEUPS_TARGET:g} wakeup/s. CPU time "
        "from `stat` is counted in clock ticks (10 ms: over 60 s one tick is 0.017 %); "
        "`schedstat` counts nanoseconds run (the target's figure when present).",
        "",
        *table(
            ["tree", "span", "CPU (stat)", "CPU (schedstat)", "wakeups/s", "per thread (/s)"], rows
        ),
        "",
    ]


def targets(r: dict[str, Any]) -> list[tuple[str, str, Optional[bool]]]:
    """Target 4's two rows (the after tree)."""
    d = (r.get("idle") or {}).get("after") or {}
    cpu, wake = d.get("ran_pct", d.get("cpu_pct")), d.get("wakeups_per_s")
    if cpu is None:
        cpu = d.get("cpu_pct")
    return [
        (
            f"4. idle CPU <= {CPU_TARGET:g} % of one core",
            "-" if cpu is None else f"{cpu:.3f} %",
            None if cpu is None else cpu <= CPU_TARGET,
        ),
        (
            f"4. idle wakeups <= {WAKEUPS_TARGET:g}/s",
            "-" if wake is None else f"{wake:.2f}/s",
            None if wake is None else wake <= WAKEUPS_TARGET,
        ),
    ]
