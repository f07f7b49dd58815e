"""Question 4, memory: peak RSS of ``sensorcast run`` with one stream forecasting steadily.

Next to it the reference: a bare Python process with numpy, paho-mqtt and the runtime holding
the same model.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.agent.common import agent_config, manifest, payloads, start_agent
from bench.agent.context import Run
from bench.agent.trees import Tree
from bench.harness.broker import subscriber
from bench.harness.markdown import mb, table
from bench.harness.proc import proc_status

__all__ = ["bare_memory", "measure", "measure_memory", "render"]


def measure_memory(
    port: int, python: str, tree: Tree, bundle: Path, work: Path, tag: str, seconds: float
) -> dict[str, Any]:
    """Peak (VmHWM) and final RSS (MB) of ``sensorcast run``, a forecast per message."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    m = manifest(bundle)
    device = f"mem-{tag}"
    client, got = subscriber(port, f"sensorcast/{device}/+/forecast")
    cfg = agent_config(work / f"mem-{tag}.toml", port, [("s0", bundle, f"mem/{tag}")], device)
    proc = start_agent(tree, python, cfg)
    time.sleep(1.0)
    feeder = paho.Client(CallbackAPIVersion.VERSION2)
    feeder.connect("127.0.0.1", port)
    feeder.loop_start()
    steps = int(seconds * 50)
    start = (np.floor(time.time() / m.period_s) - steps - m.window - 10) * m.period_s
    feed = payloads(list(m.features), float(start), m.period_s, steps + m.window)
    samples = []
    t_end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < t_end and i < len(feed):
        for message in feed[i : i + 5]:  # 50 messages a second: a forecast each
            feeder.publish(f"mem/{tag}", message, qos=1)
        i += 5
        time.sleep(0.1)
        samples.append(proc_status(proc.pid).get("VmRSS", 0.0))
    time.sleep(1.0)
    st = proc_status(proc.pid)
    proc.terminate()
    proc.wait(30)
    feeder.loop_stop()
    client.loop_stop()
    return {
        "peak_mb": st.get("VmHWM"),
        "final_mb": st.get("VmRSS"),
        "steady_median_mb": statistics.median(samples[len(samples) // 2 :]) if samples else None,
        "forecasts": len(got),
        "alive": proc.returncode in (0, None),
    }


def bare_memory(python: str, bundle: Path, runtime_module: str) -> dict[str, Any]:
    """The reference: Python with numpy, paho-mqtt and the runtime, holding one model (MB)."""
    code = (
        "import numpy, paho.mqtt.client, time\n"
        f"from {runtime_module} import Interpreter\n"
        f"i = Interpreter(model_path={str(bundle)!r}); i.allocate_tensors(); i.invoke()\n"
        "time.sleep(0.3)\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1]}
    return {"peak_mb": int(proc.stdout.strip().splitlines()[-1]) / 1024}


def _cells(run: Run) -> list[tuple[str, str, str, Path, str]]:
    """(runtime, python, interpreter module, bundle, label) of each memory cell."""
    demo, f32 = run.bundles()["demo"], run.f32_bundles()["demo"]
    assert demo is not None and f32 is not None
    litert = ("litert", sys.executable, "ai_edge_litert.interpreter")
    cells = [(*litert, Path(demo), "demo (dynamic)"), (*litert, Path(f32), "demo (float32)")]
    if run.tflite_python:
        cells.append(
            (
                "tflite-runtime 2.14",
                run.tflite_python,
                "tflite_runtime.interpreter",
                Path(f32),
                "demo (float32)",
            )
        )
    return cells


def measure(run: Run) -> None:
    """Each cell on both trees, next to its bare reference."""
    secs = 8.0 if run.quick else 15.0
    run.r["memory"] = {}
    for i, (rt, py, module, bundle, label) in enumerate(_cells(run)):
        cell: dict[str, Any] = {
            "runtime": rt,
            "bundle": label,
            "bare": bare_memory(py, bundle, module),
        }
        for side, tree in run.trees.items():
            cell[side] = measure_memory(run.port, py, tree, bundle, run.work, f"{i}{side}", secs)
        run.r["memory"][str(i)] = cell


def render(r: dict[str, Any]) -> list[str]:
    """Section 4."""
    head = [
        "runtime",
        "bundle",
        "bare reference peak",
        "agent peak before",
        "agent peak after",
        "agent final after",
        "forecasts",
    ]
    rows = []
    for d in (r.get("memory") or {}).values():
        b, c, ref = d.get("before") or {}, d.get("after") or {}, d.get("bare") or {}
        rows.append(
            [
                d["runtime"],
                d["bundle"],
                mb(ref.get("peak_mb")),
                mb(b.get("peak_mb")),
                f"**{mb(c.get('peak_mb'))}**",
                mb(c.get("final_mb")),
                c.get("forecasts", "-"),
            ]
        )
    return [
        "## 4. Memory: `sensorcast run`, one stream, forecasting steadily",
        "",
        "VmHWM (peak RSS) and RSS at the end, MB, after a stream of readings that makes a "
        "forecast per message (about 50 a second). Target <= 55 MB on x86. Reference: a bare "
        "Python process with numpy, paho-mqtt and the runtime holding the same model.",
        "",
        *table(head, rows),
        "",
    ]
