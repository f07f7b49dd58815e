"""``bench/convert_bench.py``: the converter benchmark's command line and its three phases.

1. ``prep``: train each grid point's model, reference outputs, ONNX exports (``--jobs``);
2. conversions: every variant of every point (``--jobs`` at a time);
3. timing: one process at a time, nothing else running.

Then ``bench/RESULTS-convert.md`` (and ``results.json`` in ``--workdir``), keeping the file's
int8 section. ``--int8`` runs only that question (``int8``) and rewrites only its section.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from bench.convert import conversions, int8, int8_report, prep, report, runtimes
from bench.convert.grid import QUICK_POINTS, UNITS, WINDOWS, make_points
from bench.harness import machine
from bench.harness.children import ChildFn, Runner, child_main
from bench.harness.paths import REPO, TFLITE_PY

__all__ = ["CHILDREN", "main"]

SCRIPT = REPO / "bench" / "convert_bench.py"
DEFAULT_OUT = REPO / "bench" / "RESULTS-convert.md"
CHILD_TIMEOUT_S = 900
CHILDREN: dict[str, ChildFn] = {
    "memory": runtimes.child_memory,
    "prep": prep.child_prep,
    "unrolled": conversions.child_unrolled,
    "reference": runtimes.child_reference,
    "tflite": runtimes.child_tflite,
    "int8prep": int8.child_prep,
    "int8run": int8.child_run,
}
PACKAGES = (
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "ai-edge-litert",
    "numpy",
    "onnxruntime",
    "onnx",
    "tf2onnx",
    "protobuf",
)
TFLITE_PROBE = (
    "import sys, numpy, tflite_runtime; v = (sys.version.split()[0], tflite_runtime.__version__,"
    " numpy.__version__); print(f'tflite-runtime {v[1]} with numpy {v[2]} (Python {v[0]}, "
    "{sys.executable})')"
)


def parser() -> argparse.ArgumentParser:
    """The options (as before the split into modules)."""
    p = argparse.ArgumentParser(
        prog="bench/convert_bench.py",
        description="Converter benchmark: size, error and speed of every way sensorcast can "
        "convert an LSTM.",
    )
    p.add_argument("--quick", action="store_true", help="2 small grid points, a smoke run")
    p.add_argument("--points", help="grid points as UNITSxWINDOW,... (e.g. 16x24,128x168)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown results file")
    p.add_argument("--workdir", type=Path, help="keep models, bundles and raw JSON here")
    p.add_argument(
        "--tflite-python",
        type=Path,
        default=TFLITE_PY,
        help="python of the tflite-runtime venv (numpy < 2)",
    )
    p.add_argument("--budget", type=float, default=0.3, help="seconds per timing round")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (median reported)")
    p.add_argument("--jobs", type=int, default=2, help="conversions/preparations at a time")
    p.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    p.add_argument("--render-from", type=Path, help="re-write --out from a kept results.json")
    p.add_argument(
        "--int8",
        action="store_true",
        help="only the int8 candidates question (issue 15); rewrites only its section of --out",
    )
    p.add_argument(
        "--qemu",
        choices=("auto", "on", "off"),
        default="auto",
        help="--int8 on arm64 under QEMU too (auto: when run as root)",
    )
    return p


def machine_info(tflite_python: Path) -> dict[str, Any]:
    """The machine, the packages, the tflite-runtime venv and the commit measured."""
    return {
        **machine.host_summary(),
        "commit": machine.git_commit(("convert", "agent")),
        "packages": machine.packages(PACKAGES),
        "tflite_env": machine.python_env(tflite_python, TFLITE_PROBE),
    }


def render_from(args: argparse.Namespace) -> int:
    """Rewrite ``--out`` from a kept ``results.json``."""
    raw = json.loads(args.render_from.read_text())
    saved = argparse.Namespace(**{**vars(args), **raw["args"]})
    saved.rounds, saved.budget = int(saved.rounds), float(saved.budget)
    text = report.render(raw["machine"], raw["points"], raw["phases"], saved, raw["command"])
    _write_keeping_int8(args.out, text)
    return 0


def _write_keeping_int8(out: Path, text: str) -> None:
    """Write the grid's results, keeping the int8 section ``--int8`` wrote earlier."""
    kept = int8_report.section_of(out.read_text()) if out.exists() else None
    out.write_text(int8_report.splice(text, kept) if kept else text)


def run_int8(args: argparse.Namespace, argv: list[str]) -> int:
    """The ``--int8`` question: its section of ``--out`` (``int8.json`` in ``--workdir``)."""
    if args.render_from:
        raw = json.loads(args.render_from.read_text())
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
        os.chdir(REPO)
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sensorcast-bench-int8-"))
        workdir.mkdir(parents=True, exist_ok=True)
        log(f"convert_bench --int8: work in {workdir}")
        runner = Runner(workdir, SCRIPT, env=dict(os.environ), cwd=REPO, timeout_s=CHILD_TIMEOUT_S)
        qemu = args.qemu == "on" or (args.qemu == "auto" and os.geteuid() == 0)
        raw = {
            "command": " ".join([".venv/bin/python bench/convert_bench.py", *argv]),
            "machine": {
                **machine.host_summary(),
                "commit": machine.git_commit(("convert", "agent")),
            },
            "result": int8.measure(runner, workdir, qemu, args.jobs, log),
            "failures": runner.failures,
        }
        (workdir / "int8.json").write_text(json.dumps(raw, indent=1, default=str))
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    section = int8_report.render(raw["result"], raw["machine"], raw["command"])
    old = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(int8_report.splice(old, section))
    log(f"wrote the int8 section of {args.out}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark (or a child of it, or only the rendering)."""
    args = parser().parse_args(argv)
    if args.child:
        return child_main(CHILDREN, *args.child)
    if args.int8:
        return run_int8(args, argv if argv is not None else sys.argv[1:])
    if args.render_from:
        return render_from(args)
    return run(args, argv if argv is not None else sys.argv[1:])


def _grid(args: argparse.Namespace) -> list[tuple[int, int]]:
    if args.points:
        return [(int(u), int(w)) for u, w in (p.split("x") for p in args.points.split(","))]
    return list(QUICK_POINTS) if args.quick else [(u, w) for u in UNITS for w in WINDOWS]


def log(line: str) -> None:
    """Progress on stdout, at once."""
    print(line, flush=True)


def _prepare(runner: Runner, points: list[dict[str, Any]], jobs: int) -> Optional[str]:
    """Phase 1; what failed, if anything."""

    def one(point: dict[str, Any]) -> None:
        point["prep"] = runner.result("prep", point, tag="prep", work=Path(point["dir"]))
        log(f"  prepared {point['name']} ({point['prep'].get('seconds', 0):.0f} s)")

    log("1/3 training 1 epoch and exporting to ONNX ...")
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, points))
    failed = [p["name"] + ": " + p["prep"]["error"] for p in points if "error" in p["prep"]]
    return "\n  ".join(failed) or None


def _time_all(
    runner: Runner, points: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any]
) -> None:
    """Phase 3: one process at a time."""
    log("3/3 timing (one process at a time) ...")
    works = not info["tflite_env"].startswith(("not available", "broken"))
    timing = {"budget": args.budget, "rounds": args.rounds}
    for point in points:
        python = str(args.tflite_python) if works else None
        runtimes.time_point(runner, point, timing, python)
        point.setdefault("tflite_runtime", {"error": f"tflite-runtime venv {info['tflite_env']}"})
        log(f"  timed {point['name']}")


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """The three phases, then the results file."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.chdir(REPO)  # convert_in_child runs ``python -m sensorcast.convert._worker`` from here
    begun = time.monotonic()
    grid = _grid(args)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sensorcast-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"convert_bench: {len(grid)} grid points, work in {workdir}")
    info = machine_info(args.tflite_python)
    runner = Runner(
        workdir, SCRIPT, env=dict(os.environ), cwd=REPO, timeout_s=CHILD_TIMEOUT_S, tail=1
    )
    points = make_points(grid, workdir)
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    failed = _prepare(runner, points, args.jobs)
    if failed:
        print("prep failed:\n  " + failed, file=sys.stderr)
        return 1
    phases["prep_s"], t0 = time.monotonic() - t0, time.monotonic()
    conversions.convert_all(runner, points, args.jobs, log)
    phases["convert_s"], t0 = time.monotonic() - t0, time.monotonic()
    _time_all(runner, points, args, info)
    phases["time_s"] = time.monotonic() - t0
    phases["total_s"] = time.monotonic() - begun
    command = " ".join(["bench/convert_bench.py", *argv])
    raw = {
        "command": command,
        "machine": info,
        "phases": phases,
        "args": {k: str(v) for k, v in vars(args).items()},
        "points": [{k: v for k, v in pt.items() if k != "source"} for pt in points],
    }
    (workdir / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    _write_keeping_int8(args.out, report.render(info, points, phases, args, command))
    kept = f" (raw data: {workdir / 'results.json'})" if args.workdir else ""
    log(f"wrote {args.out} in {phases['total_s'] / 60:.1f} min{kept}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
