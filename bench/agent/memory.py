"""Question 4, memory: peak RSS of ``sensorcast run`` with one stream forecasting steadily.

Next to it the reference: a bare Python process with numpy, paho-mqtt and the runtime holding
the same model; and where the agent's resident memory is, by mapping (``/proc/PID/smaps``).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench.agent.common import agent_config, manifest, payloads, start_agent
from bench.agent.context import Run
from bench.agent.trees import Tree
from bench.harness.broker import subscriber
from bench.harness.markdown import mb, table
from bench.harness.proc import proc_status

__all__ = ["bare_memory", "by_mapping", "measure", "measure_memory", "render", "targets"]

#: Issue 18 target 5: peak RSS of `sensorcast run`, one stream, LiteRT (MB).
TARGET_MB = 50.0

#: Kinds of mapping, by a piece of the mapped file's path (first match wins); the rest of
#: the files are "other libraries", anonymous memory and the heap "heap and anonymous".
KINDS = (
    ("LiteRT / TFLite runtime", ("ai_edge_litert", "tflite_runtime")),
    ("numpy and its OpenBLAS", ("numpy", "scipy_openblas", "libgfortran", "libquadmath")),
    ("libpython", ("libpython",)),
    ("OpenSSL (ssl, hashlib)", ("libssl", "libcrypto", "_ssl.", "_hashlib.")),
    ("SQLite", ("sqlite",)),
    ("C++ runtime, libc, libm", ("libstdc++", "libc.so", "libm.so", "libgcc_s", "ld-linux")),
)
HEAP = "heap and anonymous (Python objects, malloc, stacks)"
OTHER = "other libraries and files"


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
    mappings = by_mapping(proc.pid)
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
        "by_mapping": mappings,
    }


def by_mapping(pid: int) -> dict[str, float]:
    """Resident MB of process ``pid`` by kind of mapping (:data:`KINDS`), from its smaps."""
    out: dict[str, float] = {}
    kind = HEAP
    try:
        with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as smaps:
            for line in smaps:
                head, _, rest = line.partition(" ")
                if "-" in head and not head.endswith(":"):
                    fields = rest.split(maxsplit=4)
                    kind = _kind(fields[4].strip() if len(fields) == 5 else "")
                elif head == "Rss:":
                    out[kind] = out.get(kind, 0.0) + int(rest.split()[0]) / 1024
    except OSError:
        return {}
    return out


def _kind(path: str) -> str:
    if not path.startswith("/"):
        return HEAP  # [heap], [stack], anonymous
    return next((k for k, parts in KINDS if any(p in path for p in parts)), OTHER)


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
        f"forecast per message (about 50 a second). Target <= {TARGET_MB:g} MB on x86 with "
        "LiteRT. Reference: a bare Python process with numpy, paho-mqtt and the runtime "
        "holding the same model.",
        "",
        *table(head, rows),
        "",
        *_render_mappings(r),
    ]


def _render_mappings(r: dict[str, Any]) -> list[str]:
    """Where the first cell's resident memory is at the end, before and after, by mapping."""
    first = next(iter((r.get("memory") or {}).values()), None) or {}
    sides = {s: (first.get(s) or {}).get("by_mapping") or {} for s in ("before", "after")}
    if not any(sides.values()):
        return []
    kinds = [k for k, _ in KINDS] + [HEAP, OTHER]
    rows = [[k, mb(sides["before"].get(k)), mb(sides["after"].get(k))] for k in kinds]
    rows.append(["**total**", *(mb(sum(sides[s].values()) or None) for s in sides)])
    return [
        f"Resident MB by mapping at the end ({first.get('runtime')}, {first.get('bundle')}; "
        "file-backed pages are shared clean pages of the libraries, counted in RSS):",
        "",
        *table(["mapping", "before", "after"], rows),
        "",
    ]


def targets(r: dict[str, Any]) -> list[tuple[str, str, Optional[bool]]]:
    """Issue 18 target 5: the after tree's peak with LiteRT, per bundle."""
    rows: list[tuple[str, str, Optional[bool]]] = []
    for d in (r.get("memory") or {}).values():
        peak = (d.get("after") or {}).get("peak_mb")
        if d.get("runtime") == "litert":
            rows.append(
                (
                    f"5. peak RSS of `sensorcast run`, one stream <= {TARGET_MB:g} MB: LiteRT, "
                    f"{d['bundle']}",
                    f"{mb(peak)} MB",
                    None if peak is None else peak <= TARGET_MB,
                )
            )
    return rows
