"""Question 5, start-up: ``Popen`` of ``sensorcast run`` to its retained ``online`` received.

Bare imports (numpy, paho-mqtt, LiteRT; ``python -c pass``; TensorFlow) for comparison. Also
the ``agentrun`` child: start-up and memory where that child runs (the QEMU chroot).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.agent.common import agent_config, start_agent
from bench.agent.context import Run
from bench.agent.memory import measure_memory
from bench.agent.trees import Tree, use_tree
from bench.harness.broker import subscriber
from bench.harness.markdown import table
from bench.harness.proc import wait_for
from bench.harness.timing import spread

__all__ = [
    "child_agentrun",
    "measure",
    "measure_imports",
    "measure_startup",
    "render",
    "summarize",
]


def summarize(times: list[float]) -> dict[str, Any]:
    """Seconds: median (``s``), ``min``, ``max`` and ``reps``, or the error of none."""
    if not times:
        return {"error": "no online message within 30 s"}
    s = spread(times)
    return {"s": s["median"], "min": s["min"], "max": s["max"], "reps": len(times)}


def _online(got: list[tuple[float, bytes]]) -> bool:
    return any(p == b"online" for _, p in got)


def measure_startup(
    port: int, python: str, tree: Tree, bundle: Path, work: Path, reps: int, tag: str
) -> list[float]:
    """exec -> retained ``online`` received by a subscriber, seconds, per repetition."""
    times = []
    for r in range(reps):
        device = f"start-{tag}-{r}"
        client, got = subscriber(port, f"sensorcast/{device}/status")
        cfg = agent_config(
            work / f"start-{tag}-{r}.toml", port, [("s0", bundle, f"start/{tag}")], device
        )
        t0 = time.monotonic()
        proc = start_agent(tree, python, cfg)
        if wait_for(functools.partial(_online, got), 30):
            times.append(next(t for t, p in got if p == b"online") - t0)
        proc.terminate()
        proc.wait(30)
        client.publish(f"sensorcast/{device}/status", b"", retain=True).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()
    return times


def measure_imports(python: str, code: str, reps: int) -> dict[str, Any]:
    """Seconds to run ``python -c code``: median, min, max (or the error)."""
    times = []
    for _ in range(reps):
        t0 = time.monotonic()
        proc = subprocess.run([python, "-c", code], capture_output=True, check=False)
        if proc.returncode != 0:
            return {"error": proc.stderr.decode(errors="replace").strip().splitlines()[-1]}
        times.append(time.monotonic() - t0)
    s = spread(times)
    return {"s": s["median"], "min": s["min"], "max": s["max"]}


def child_agentrun(spec: dict[str, Any]) -> dict[str, Any]:
    """``sensorcast run`` start-up and memory where this child runs (the QEMU chroot)."""
    use_tree(spec)  # the parent's helpers read the bundle with this tree's agent
    work = Path(tempfile.mkdtemp(prefix="sensorcast-run-"))
    tree = Tree("after", Path(spec["tree"]), spec["package"], "checkout")
    bundle, tag, port = Path(spec["bundle"]), spec["tag"], spec["port"]
    out = {
        "startup": summarize(
            measure_startup(port, sys.executable, tree, bundle, work, spec["reps"], tag)
        ),
        "memory": measure_memory(port, sys.executable, tree, bundle, work, tag, spec["secs"]),
    }
    shutil.rmtree(work, ignore_errors=True)
    return out


def measure(run: Run) -> None:
    """Both trees taking turns (under the same load), tflite-runtime, and the bare imports."""
    demo = Path(str(run.bundles()["demo"]))
    reps = 3 if run.quick else 5
    turns: dict[str, list[float]] = {side: [] for side in run.trees}
    for rep in range(reps):
        for side, tree in run.trees.items():
            turns[side] += measure_startup(
                run.port, sys.executable, tree, demo, run.work, 1, f"{side}{rep}"
            )
    got = {f"sensorcast run, LiteRT, {side}": summarize(t) for side, t in turns.items()}
    if run.tflite_python:
        f32 = Path(str(run.f32_bundles()["demo"]))
        times = measure_startup(run.port, run.tflite_python, run.after, f32, run.work, reps, "tfl")
        got["sensorcast run, tflite-runtime, after"] = summarize(times)
    got["bare import numpy, paho-mqtt, LiteRT"] = measure_imports(
        sys.executable, "import numpy, paho.mqtt.client, ai_edge_litert.interpreter", reps
    )
    got["bare `python -c pass`"] = measure_imports(sys.executable, "pass", reps)
    got["import tensorflow (for comparison)"] = measure_imports(
        sys.executable, "import tensorflow", 1 if run.quick else 3
    )
    run.r["startup"] = got


def render(r: dict[str, Any]) -> list[str]:
    """Section 5."""
    rows = []
    for key, d in (r.get("startup") or {}).items():
        cell = f"{d['s']:.3f} ({d['min']:.3f}-{d['max']:.3f})" if "s" in d else d.get("error")
        rows.append([key, cell])
    return [
        "## 5. Start-up: exec to `online` received",
        "",
        "A subscriber on the status topic times from `Popen` of `python -m sensorcast.agent "
        "run` (`python -m agent run` for a tree from before the rename) to the retained "
        "`online` (seconds, median of the repetitions, spread in brackets). Target < 0.5 s "
        "on x86.",
        "",
        *table(["", "seconds"], rows),
        "",
    ]
