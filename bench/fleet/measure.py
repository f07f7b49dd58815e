"""The timed runs: ``sensorcast fleet status`` (table and ``--json``) and ``sensorcast fleet
rollout`` as child processes against the simulated fleet (wall time, peak RSS from the
kernel's rusage of the child), and the rollout's pure decision (``decide``) in this process
over a 1,000-device view (time per call, memory by tracemalloc)."""

from __future__ import annotations

import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Optional

from bench.fleet.sim import SimDevice, apply, make_devices, messages
from bench.harness.proc import proc_status

__all__ = ["cli_run", "decision", "median_rounds", "repeat_cli", "step_times"]

FLEET = (sys.executable, "-m", "sensorcast.agent", "fleet")
_STEP_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) .*\(wave \d+\): ([a-z_]+)")


def cli_run(args: list[str], timeout_s: float = 600, log: Optional[Path] = None) -> dict[str, Any]:
    """Run ``sensorcast fleet ARGS`` to the end: wall s, peak RSS MB (the child's ``VmHWM``,
    read every 10 ms until it exits), CPU s (its rusage, from ``os.wait4``), exit code,
    stdout and stderr's last lines (all of stderr into ``log`` if given).

    Not ``ru_maxrss``: Linux carries the parent's high-water mark over into a child at
    ``exec``, so a child of this (large) process would report this process's peak.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.perf_counter()
        proc = subprocess.Popen([*FLEET, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout_s
        peak = 0.0
        while True:
            peak = max(peak, proc_status(proc.pid).get("VmHWM", 0.0))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.01)
        wall = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = err.read()
        if log is not None:
            log.write_text(text)
        return {
            "wall_s": wall,
            "peak_rss_mb": peak,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "code": proc.returncode,
            "stdout": out.read(),
            "stderr_tail": text.strip().splitlines()[-5:],
        }


def step_times(log: str) -> dict[str, list[float]]:
    """From a rollout's log (``dev-1 (wave 1): soaking`` lines), each step's first and last
    time, seconds after the log's first line: where a rollout's time goes."""
    import datetime

    first: Optional[float] = None
    out: dict[str, list[float]] = {}
    for line in log.splitlines():
        match = _STEP_LINE.match(line)
        if match is None:
            continue
        when = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        first = when if first is None else first
        span = out.setdefault(match.group(2), [when - first, when - first])
        span[1] = when - first
    return out


def repeat_cli(args: list[str], rounds: int, timeout_s: float = 600) -> dict[str, Any]:
    """``rounds`` runs of ``sensorcast fleet ARGS``: median, min and max of wall s and peak
    RSS MB, the CPU s, the exit codes, and the last run's stdout."""
    runs = [cli_run(args, timeout_s) for _ in range(rounds)]
    walls = [r["wall_s"] for r in runs]
    rss = [r["peak_rss_mb"] for r in runs]
    return {
        "wall_s": statistics.median(walls), "wall_min_s": min(walls), "wall_max_s": max(walls),
        "peak_rss_mb": statistics.median(rss), "peak_rss_max_mb": max(rss),
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "codes": [r["code"] for r in runs], "stdout": runs[-1]["stdout"],
        "stderr_tail": runs[-1]["stderr_tail"], "rounds": rounds,
    }  # fmt: skip


# -- the decision in this process ------------------------------------------------------------


def _feed(fleet: Any, pairs: list[tuple[str, bytes]]) -> None:
    from sensorcast.agent.fleet.view import apply as view_apply

    for topic, payload in pairs:
        view_apply(fleet, topic, payload)


def _answers(
    prefix: str, shapes: dict[str, Any], devices: dict[str, SimDevice], actions: list[Any],
    bodies: dict[str, dict[str, Any]], now: float,
) -> list[tuple[str, bytes]]:  # fmt: skip
    """What the devices publish when they have answered ``actions``, made at ``now``."""
    out: list[tuple[str, bytes]] = []
    for action in actions:
        dev = devices[action.device]
        body = {**bodies[action.kind], "id": action.id}
        state = apply(dev, body)
        out.append((f"{prefix}/{dev.id}/model/state", json.dumps(state).encode()))
        out.extend(messages(prefix, shapes, dev, now))
    return out


def _timed(label: str, fn: Any, log: list[dict[str, Any]]) -> Any:
    """Call ``fn()``; log its wall ms and how many actions it returned."""
    began = time.perf_counter()
    result = fn()
    ms = (time.perf_counter() - began) * 1000
    log.append({"phase": label, "ms": ms, "actions": len(result) if result is not None else 0})
    return result


def decision(
    shapes: dict[str, Any], bundle: Path, count: int, bad_share: float = 0.0,
    state_file: Optional[Path] = None, trace: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """One single-wave rollout over ``count`` simulated devices, decided by the controller's
    own pure ``decide`` in this process: the view built from the devices' retained messages,
    then each round (installs out, shadows confirmed, judged and promotes out, promoted),
    each device answering between rounds. Time per round and the plan file's save; with
    ``trace``, memory too (tracemalloc: the view's size, the peak while deciding), whose
    bookkeeping slows the rounds down: time them in a run without it."""
    from sensorcast.agent.fleet.decide import Policy, decide
    from sensorcast.agent.fleet.gate import DEFAULT_GATE, parse_gate
    from sensorcast.agent.fleet.model import Fleet
    from sensorcast.agent.fleet.plan import DeviceRecord, Plan, save
    from sensorcast.agent.fleet.waves import split_waves
    from sensorcast.agent.forecast.manifest import read_bundle

    prefix = "dec"
    found = read_bundle(bundle)
    sha = found.sha256
    ids = [f"sim-{i:04d}" for i in range(count)]
    bad = ids[: int(count * bad_share)]
    devices = make_devices(count, bad=bad)
    log: list[dict[str, Any]] = []
    if trace:
        tracemalloc.start()
    now = time.time()
    fleet = Fleet(prefix)
    retained: list[tuple[str, bytes]] = []
    for dev in devices.values():
        retained.append((f"{prefix}/{dev.id}/status", b"online"))
        retained.extend(messages(prefix, shapes, dev, now))
    _timed(
        "view: 3 retained messages per device into the view", lambda: _feed(fleet, retained), log
    )
    view_mb = tracemalloc.get_traced_memory()[0] / 2**20 if trace else None
    gate = list(DEFAULT_GATE)
    policy = Policy([parse_gate(g) for g in gate], timeout_s=120, offline_wait_s=600)
    plan = Plan(
        id=f"room-{sha[:12]}-bench", stream="room", sha256=sha, label=found.label,
        created=found.manifest.created, waves=[100.0], cohorts=split_waves(ids, (100.0,)),
        soak_s=10.0, gate=gate, max_failed=0.1, signed=True, started_at=now, updated_at=now,
    )  # fmt: skip
    for device in ids:
        plan.devices[device] = DeviceRecord(device, 0)
    data = base64.b64encode(found.model).decode()
    bodies: dict[str, dict[str, Any]] = {
        "install": {"stream": "room", "sha256": sha, "data": data, "shadow": True},
        "promote": {"stream": "room", "sha256": sha, "action": "promote"},
        "drop_shadow": {"stream": "room", "sha256": sha, "action": "drop_shadow"},
    }
    rounds = [("decide 1: devices pending -> install requests", now + 1)]
    rounds += [("decide 2: install answers read -> soaks start", now + 2)]
    rounds += [("decide 3: soak over -> gate, verdict, promote/drop requests", now + 13)]
    rounds += [("decide 4: answers read -> promoted (or dropping)", now + 14)]
    if trace:
        tracemalloc.reset_peak()
    for label, when in rounds:
        # The devices' periodic reports (quality.interval_s) made just before this round.
        _feed(
            fleet,
            [m for dev in devices.values() for m in messages(prefix, shapes, dev, when - 0.5)],
        )
        actions = _timed(label, lambda w=when: decide(plan, fleet, w, policy), log)
        _feed(fleet, _answers(prefix, shapes, devices, actions, bodies, when + 0.5))
    peak_mb = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    tracemalloc.stop()
    if state_file is not None:
        _timed("save: the plan file (atomic, synced)", lambda: save(plan, state_file), log)
    steps: dict[str, int] = {}
    for rec in plan.devices.values():
        steps[rec.step] = steps.get(rec.step, 0) + 1
    return {
        "devices": count, "bad": len(bad), "rounds": log, "view_mb": view_mb,
        "decide_peak_mb": peak_mb, "status": plan.status, "reason": plan.reason, "steps": steps,
        "plan_bytes": state_file.stat().st_size if state_file is not None else None,
    }  # fmt: skip


def median_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The last of several :func:`decision` runs, each step's ms the median of them all
    (``ms_min``/``ms_max`` their range)."""
    out = dict(runs[-1])
    out["rounds"] = []
    for i, last in enumerate(runs[-1]["rounds"]):
        times = [run["rounds"][i]["ms"] for run in runs]
        out["rounds"].append(
            {**last, "ms": statistics.median(times), "ms_min": min(times), "ms_max": max(times)}
        )
    out["runs"] = len(runs)
    return out
