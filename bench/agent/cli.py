"""``bench/run``: the agent benchmark's command line, and the run of all its questions.

Measures, side by side in one run (issue 7), and writes to ``bench/RESULTS.md``:

1. per forecast: the agent's whole path against a bare ``invoke()`` loop (``path``);
2. ingest: readings/s in process and through a real Mosquitto (``ingest``);
3. 100 streams sharing one model: batched vs one call each (``batching``);
4. peak RSS of ``sensorcast run`` with one stream (``memory``);
5. start-up: exec to ``online`` published (``startup``);
6. the alternatives on the same models, as ratios to the agent (``alternatives``);
7. the same under QEMU arm64 (``qemu``; emulated).

In-process parts run in child processes, once on the ``agent/`` of ``--baseline`` ("before")
and once on this checkout's ("after").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from bench.agent import (
    alternatives,
    batching,
    ingest,
    instructions,
    memory,
    models,
    path,
    qemu,
    report,
    startup,
    trees,
)
from bench.agent.common import LSTM
from bench.agent.context import Run
from bench.harness.broker import Mosquitto
from bench.harness.children import ChildFn, Runner, child_main
from bench.harness.machine import cpu_model, memory_gib, packages
from bench.harness.paths import REPO
from bench.harness.proc import load_avg

__all__ = ["CHILDREN", "main"]

SCRIPT = REPO / "bench" / "agent_bench.py"


#: The children, by the KIND of ``--child KIND SPEC``.
CHILDREN: dict[str, ChildFn] = {
    "prepare": models.child_prepare,
    "path": path.child_path,
    "window": ingest.child_window,
    "batch": batching.child_batch,
    "alternatives": alternatives.child_alternatives,
    "agentrun": startup.child_agentrun,
    "steps": instructions.child_steps,
}


def parser() -> argparse.ArgumentParser:
    """``bench/run``'s options."""
    p = argparse.ArgumentParser(
        prog="bench/run", description="Agent benchmark: what the agent costs beyond the model."
    )
    p.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="fewer rounds and readings: a smoke run")
    p.add_argument("--baseline", default="HEAD", help="git revision for 'before' (default HEAD)")
    p.add_argument(
        "--qemu",
        choices=("auto", "on", "off"),
        default="auto",
        help="item 7 under QEMU arm64 (auto: when run as root)",
    )
    p.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per forecast with valgrind (about 5 min more)",
    )
    p.add_argument("--workdir", type=Path, help="keep models, logs and results.json here")
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "RESULTS.md",
        help="the markdown (default bench/RESULTS.md)",
    )
    p.add_argument("--render-from", type=Path, help="rewrite the markdown from results.json")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark (or a child of it, or only the rendering)."""
    args = parser().parse_args(argv)
    if args.child:
        return child_main(CHILDREN, *args.child)
    if args.render_from:
        args.out.write_text(report.render(json.loads(args.render_from.read_text())))
        return 0
    return run_all(args)


def host_lines(broker: Mosquitto) -> list[str]:
    """The machine, as the results file's header lists it."""
    import platform

    versions = packages(("numpy", "paho-mqtt", "ai-edge-litert"))
    return [
        f"- host: {cpu_model()}, {os.cpu_count()} cores, {memory_gib()} RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- {', '.join(f'{k} {v}' for k, v in versions.items())}; {broker.version()}",
    ]


def _prepare(run: Run) -> None:
    print("preparing models (TensorFlow, conversions) ...", flush=True)
    spec = {"work": str(run.work), "label": "LSTM(64)x48 + bundles"}
    run.prep = run.child("prepare", spec, timeout_s=1200) or {}
    run.r["models"] = {
        "demo": "demo room (dynamic, 24x2 -> 12)",
        "lstm": f"LSTM({LSTM[0]}) x window {LSTM[1]} (float32, 3 features -> 12)",
    }
    run.r["tflite_models"] = {"demo": "demo room (float32)", "lstm": run.r["models"]["lstm"]}


def _questions(run: Run, with_qemu: bool, with_instructions: bool) -> None:
    broker = Mosquitto()
    broker.start()
    run.port = broker.port
    run.r["host"] = host_lines(broker)
    try:
        for title, question in (
            ("1. per forecast", path),
            ("2. ingest", ingest),
            ("3. many streams", batching),
            ("4. memory", memory),
            ("5. start-up", startup),
        ):
            print(f"{title} ...", flush=True)
            question.measure(run)
        if with_instructions:
            print("1. instructions per forecast (callgrind) ...", flush=True)
            instructions.measure(run)
    finally:
        broker.close()
    print("6. alternatives ...", flush=True)
    alternatives.measure(run)
    if with_qemu:
        print("7. QEMU arm64 ...", flush=True)
        qemu.measure(run)


def run_all(args: argparse.Namespace) -> int:
    """Every question on both trees; writes ``--out`` and ``results.json`` in the work dir."""
    began = time.monotonic()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sensorcast-agentbench-"))
    work.mkdir(parents=True, exist_ok=True)
    before = trees.baseline(args.baseline, work / "before")
    after = trees.snapshot(work / "after")
    run = Run(work, Runner(work, SCRIPT), {"before": before, "after": after}, args.quick)
    run.r.update(
        started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        load_start=load_avg(),
        quick=args.quick,
        baseline=args.baseline,
        baseline_rev=before.rev,
        before={"rev": before.rev, "package": before.package},
        settings={"n": run.n, "rounds": run.rounds_per_turn, "turns": run.turns},
    )
    _prepare(run)
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    _questions(run, args.qemu == "on" or (args.qemu == "auto" and as_root), args.instructions)
    run.r.update(load_end=load_avg(), elapsed_s=time.monotonic() - began)
    run.r["failures"] = run.runner.failures
    (work / "results.json").write_text(json.dumps(run.r, indent=1, default=str))
    args.out.write_text(report.render(run.r))
    print(
        f"wrote {args.out} ({run.r['elapsed_s'] / 60:.1f} min); raw results in {work}/results.json"
    )
    for f in run.runner.failures:
        print(f"failure: {f}", file=sys.stderr)
    return 0
