"""Question 7: questions 1, 2 (in process), 4 and 5 under QEMU arm64 (emulated), and the
LSTM's quantization modes (:mod:`bench.agent.modes`, stored under ``r["qemu"]["modes"]``).

The children run in the arm64 chroot (``deploy/qemu/run``) on the cached env layer's two
venvs (``deploy/qemu/env``), with the checkout bound in read-only at ``/src`` and a work
directory (bundles, the two trees, specs, results) at ``/work``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

from bench.agent import modes
from bench.agent.context import Run
from bench.agent.path import merge_path
from bench.harness.broker import Mosquitto
from bench.harness.children import Where
from bench.harness.markdown import fr, mb, ratio, table, us
from bench.harness.paths import DEMO_DIR, REPO

__all__ = ["MODE_FILES", "chroot", "copy_files", "lines", "measure", "measure_modes", "render"]

VENVS = {
    "litert": "/opt/sensorcast/litert/bin/python",
    "tflite-runtime": "/opt/sensorcast/tflite/bin/python",
}
#: (runtime, bundle) of the per-forecast cell measured on both trees, taking turns.
BOTH = ("litert", "room.tflite")
#: (runtime, bundle) of the per-forecast cells measured on the after tree.
AFTER_CELLS = (
    ("litert", "lstm.tflite"),
    ("tflite-runtime", "room_f32.tflite"),
    ("tflite-runtime", "lstm.tflite"),
)
#: The LSTM's bundles by mode, as named in the chroot's work directory.
MODE_FILES = {
    "float32": "lstm.tflite",
    "int8": "lstm_int8.tflite",
    "dynamic": "lstm_dynamic.tflite",
}


def _layer(run: Run) -> Optional[str]:
    """The cached arm64 env layer (``deploy/qemu/env``), or None with the reason recorded."""
    try:
        out = subprocess.run(
            [str(REPO / "deploy" / "qemu" / "env")],
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        )
        return out.stdout.strip().splitlines()[-1]
    except (subprocess.SubprocessError, OSError, IndexError) as exc:
        run.runner.failures.append(f"qemu: cannot set up the arm64 chroot: {exc}")
        return None


def copy_files(run: Run, qwork: Path) -> set[str]:
    """Copy the bundles and both trees into the chroot's work directory; the bundles' names."""
    files = {"room.tflite": DEMO_DIR / "room.tflite"}
    if run.prep.get("demo_f32"):
        files["room_f32.tflite"] = Path(run.prep["demo_f32"])
    for mode, name in MODE_FILES.items():
        if run.prep.get(modes.MODES[mode]):
            files[name] = Path(run.prep[modes.MODES[mode]])
    for name, src in files.items():
        shutil.copy(src, qwork / name)
    for side, tree in run.trees.items():
        # symlinks as links: the baseline's agent/demo/room.tflite points out of its tree
        shutil.copytree(tree.root, qwork / side, symlinks=True, dirs_exist_ok=True)
    return set(files)


def chroot(run: Run, script: str = "/src/bench/agent_bench.py") -> Optional[Where]:
    """Where children run in the arm64 chroot (work directory ``run.work / "qemu"`` at
    ``/work``, the checkout at ``/src``), or None with the reason in the runner's failures."""
    layer = _layer(run)
    if layer is None:
        return None
    qwork = run.work / "qemu"
    qwork.mkdir(exist_ok=True)
    prefix = (
        str(REPO / "deploy" / "qemu" / "run"),
        "--layer",
        layer,
        "--bind",
        f"{REPO}:/src:ro",
        "--bind",
        f"{qwork}:/work",
        "--",
    )
    return Where(prefix, qwork, "/work", script)


def measure(run: Run) -> None:
    """Run the chroot's children; ``run.r["qemu"]`` gets the raw results and the lines, and
    the modes' results under ``"modes"``."""
    where = chroot(run)
    if where is None:
        run.r["qemu"] = {"lines": ["Could not set up the chroot: " + run.runner.failures[-1]]}
        return
    files = copy_files(run, where.host)
    broker = Mosquitto()
    broker.start()
    try:
        raw = _children(run, where, files, broker.port)
    finally:
        broker.close()
    run.r["qemu"] = {"raw": raw, "lines": lines(raw), "modes": measure_modes(run, where, files)}


def measure_modes(run: Run, where: Where, files: set[str]) -> dict[str, Any]:
    """The LSTM's modes in the chroot, one ``modes`` child per runtime (tflite-runtime 2.14
    reports the dynamic bundle it cannot load as unavailable); {} without the bundles."""
    paths = {mode: f"/work/{name}" for mode, name in MODE_FILES.items() if name in files}
    if "float32" not in paths or len(paths) < 2:
        return {}
    out: dict[str, Any] = {}
    for rt, py in VENVS.items():
        spec = {**modes.spec(run, paths, emulated=True, tree_root="/work/after"), "runtime": rt,
                "label": f"qemu {rt}"}  # fmt: skip
        out[rt] = run.child("modes", spec, python=py, where=where, timeout_s=1800)
    return out


def _path_spec(run: Run, side: str, rt: str, name: str, port: int) -> dict[str, Any]:
    return {
        **run.trees[side].spec(f"/work/{side}"),
        "bundle": f"/work/{name}",
        "n": 40 if run.quick else 80,
        "rounds": run.rounds_per_turn if name == BOTH[1] and rt == BOTH[0] else 3,
        "port": port,
        "runtime": rt,
        "label": f"qemu {rt} {name} {side}",
    }


def _children(run: Run, where: Where, files: set[str], port: int) -> dict[str, Any]:
    kw: dict[str, Any] = {"where": where, "timeout_s": 1800}
    rt, name = BOTH
    specs = {side: _path_spec(run, side, rt, name, port) for side in run.trees}
    both = run.alternate("path", specs, merge_path, python=VENVS[rt], **kw)
    raw: dict[str, Any] = {f"{rt} {name} {side}": res for side, res in both.items()}
    for rt, name in AFTER_CELLS:
        if name in files:
            spec = _path_spec(run, "after", rt, name, port)
            raw[f"{rt} {name} after"] = run.child("path", spec, python=VENVS[rt], **kw)
    after = run.after.spec("/work/after")
    for rt, py in VENVS.items():
        # tflite-runtime 2.14 refuses the dynamic-range demo bundle's op versions
        bundle = "/work/room.tflite" if rt == "litert" else "/work/room_f32.tflite"
        raw[f"{rt} window"] = run.child(
            "window",
            {
                **after,
                "bundle": bundle,
                "n": 20_000 if run.quick else 30_000,
                "rounds": 3,
                "port": port,
                "label": f"qemu {rt}",
            },
            python=py,
            **kw,
        )
        raw[f"{rt} agentrun"] = run.child(
            "agentrun",
            {
                **after,
                "bundle": bundle,
                "port": port,
                "reps": 2 if run.quick else 3,
                "secs": 8.0 if run.quick else 15.0,
                "tag": f"q{rt[:3]}",
                "label": f"qemu {rt} start-up and memory",
            },
            python=py,
            **kw,
        )
    return raw


def lines(raw: dict[str, Any]) -> list[str]:
    """The section's markdown from the chroot's results."""
    head = [
        "runtime",
        "bundle",
        "agent",
        "bare invoke",
        "forecast",
        "agent path",
        "ratio path/bare",
        "ratio, CPU time",
    ]
    rows = []
    for key, res in raw.items():
        if key.endswith(("window", "agentrun")) or not res:
            continue
        rt, name, side = key.split(" ")
        s = res["stages"]
        path, bare = s.get("agent_path"), s.get("bare_invoke")
        rows.append(
            [
                rt,
                name,
                side,
                us(bare),
                us(s.get("forecast")),
                us(path),
                fr(ratio(path, bare)),
                fr(ratio(path, bare, "cpu_us")),
            ]
        )
    out = [*table(head, rows), ""]
    for key, res in raw.items():
        if key.endswith("window") and res:
            wa, si = res["window_add"], res["service_ingest"]
            out.append(
                f"- {key}: `Window.add` {wa['per_s']:,.0f} readings/s; service ingest "
                f"{si['per_s']:,.0f} readings/s (emulated)"
            )
        if key.endswith("agentrun") and res:
            out.append(_agentrun_line(key.split()[0], res))
    return out


def _agentrun_line(runtime: str, res: dict[str, Any]) -> str:
    st, mem = res["startup"], res["memory"]
    start = f"{st['s']:.2f} s ({st['min']:.2f}-{st['max']:.2f})" if "s" in st else st
    return (
        f"- {runtime}: `sensorcast run` start-up to `online` {start}; peak RSS "
        f"{mb(mem.get('peak_mb'))} MB, final {mb(mem.get('final_mb'))} MB, "
        f"{mem.get('forecasts')} forecasts (RSS of the qemu-user process: the emulator "
        "and its translated code included)"
    )


def render(r: dict[str, Any]) -> list[str]:
    """Section 7."""
    q = r.get("qemu")
    out = ["## 7. Under QEMU arm64 (emulated)", ""]
    if not q:
        return [
            *out,
            "Not run in this run (`--qemu on`, or `auto` as root; needs binfmt_misc).",
            "",
        ]
    out += [
        "**Emulated**: qemu-user on this x86 host, arm64 Debian bookworm chroot "
        "(`deploy/qemu/run`). Useful as ratios between configurations, not as Pi timings. "
        "The LiteRT demo cell ran on both trees, their children taking turns.",
        "",
    ]
    return [*out, *q.get("lines", []), ""]
