"""Where the compute path's time goes: py-spy flame graphs of both models, committed as SVG.

The ``flame`` child runs the compute path of :mod:`bench.agent.path` (an MQTT JSON message
parsed by the stream's source -> window -> forecast -> quality, band, fallback and anomaly
checks -> JSON payload, dropped; no MQTT poll, no outbox) in this checkout's ``Service``;
once its window is full and warm it starts ``py-spy record`` on itself for ``seconds`` and
keeps forecasting until py-spy is done (``--nonblocking``: the process is not paused per
sample, so it runs near full speed; ``--function``: a frame per function, not per line).
Only the loop is sampled, not the imports and the start. The SVGs go to
``bench/flame-demo.svg`` and ``bench/flame-lstm.svg``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from bench.agent.context import Run
from bench.agent.drive import driver
from bench.agent.path import whole_path
from bench.harness.paths import REPO

__all__ = ["OUT", "child_flame", "measure", "render", "targets"]

OUT = {"demo": REPO / "bench" / "flame-demo.svg", "lstm": REPO / "bench" / "flame-lstm.svg"}
RATE = 2000  #: samples per second
SECONDS = 10.0  #: sampled per model


def py_spy() -> Optional[str]:
    """py-spy next to this Python (the bench extra installs it), else on the PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def child_flame(spec: dict[str, Any]) -> dict[str, Any]:
    """Forecast on the compute path while py-spy samples this process into ``spec["svg"]``."""
    drv = driver(spec)
    runtime = drv.load_runtime(spec.get("runtime"))
    work = Path(tempfile.mkdtemp(prefix="sensorcast-flame-"))
    spy = spec.get("py_spy") or py_spy()
    if spy is None:
        raise SystemExit("py-spy is not installed (pip install -e '.[bench]')")
    # Enough messages for the whole run: whole_path sizes its feed by n * (rounds + 1).
    service, step = whole_path(drv, "agent_compute", spec, runtime, work, 1)
    for _ in range(2000):  # warm: the band, the scores and the anomaly state settle
        step()
    svg = spec["svg"]
    cmd = [spy, "record", "--pid", str(os.getpid()), "--rate", str(spec.get("rate", RATE)),
           "--duration", str(int(spec.get("seconds", SECONDS))), "--format", "flamegraph",
           "--nonblocking", "--function",
           "-o", svg]  # fmt: skip
    spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # py-spy attaches
    before = drv.forecasts(service, "s0")
    c0, t0 = time.process_time(), time.perf_counter()
    left = spec["n"] * 2 - 2200  # the messages fed (whole_path), less the warm-up's
    while spy_proc.poll() is None and left > 100:
        for _ in range(100):
            step()
        left -= 100
    spy_proc.wait()
    c1, t1 = time.process_time(), time.perf_counter()
    made = drv.forecasts(service, "s0") - before
    err = spy_proc.stderr.read().decode(errors="replace") if spy_proc.stderr else ""
    drv.close(service, None)
    shutil.rmtree(work, ignore_errors=True)
    if spy_proc.returncode != 0 or not Path(svg).exists():
        raise SystemExit(f"py-spy failed ({spy_proc.returncode}): {err.strip()[-300:]}")
    return {
        "svg": svg,
        "forecasts": made,
        "us_per_forecast": (t1 - t0) / max(made, 1) * 1e6,
        "cpu_us_per_forecast": (c1 - c0) / max(made, 1) * 1e6,
        "rate": spec.get("rate", RATE),
    }


def measure(run: Run) -> None:
    """Both models on the after tree; ``run.r["flame"]`` (the SVGs are written in bench/)."""
    out: dict[str, Any] = {}
    for key, bundle in run.bundles().items():
        if not bundle:
            continue
        n = int(SECONDS * 10000)  # 2n messages: one forecast each, >= 10 µs each
        spec = {
            **run.after.spec(),
            "bundle": bundle,
            "port": run.port,
            "n": n,
            "runtime": "litert",
            "svg": str(OUT[key]),
            "label": key,
        }
        out[key] = run.child("flame", spec)
    run.r["flame"] = out


def render(r: dict[str, Any]) -> list[str]:
    """A short section linking the flame graphs."""
    got = r.get("flame") or {}
    if not got:
        return []
    lines = [
        "## Flame graphs of the compute path (py-spy)",
        "",
        "The compute path (question 1's: parse -> window -> forecast -> quality, band, "
        "fallback and anomaly checks -> JSON payload; no MQTT, no outbox) of this checkout, "
        f"sampled by `py-spy record` at {RATE} Hz for {SECONDS:.0f} s once its window was "
        "full and warm (the loop only, not the start). Open the SVGs in a browser to zoom; "
        "`Interpreter.invoke` is the model, the rest is the agent.",
        "",
    ]
    for key, res in got.items():
        label = r.get("models", {}).get(key, key)
        if not res:
            lines.append(f"- {label}: failed (see the failures below)")
            continue
        name = Path(res["svg"]).name
        lines.append(
            f"- {label}: [{name}]({name}), {res['forecasts']} forecasts sampled, "
            f"{res['cpu_us_per_forecast']:.0f} µs CPU per forecast while sampled"
        )
    return [*lines, ""]


def targets(r: dict[str, Any]) -> list[tuple[str, str, Optional[bool]]]:
    """No target of its own (the flame graphs explain question 1's)."""
    return []
