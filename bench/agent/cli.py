"""``bench/run``: the agent benchmark's command line, and the run of its questions.

Measures, side by side in one run, and writes to ``bench/RESULTS.md`` issue 18's targets
(the compute path, the whole path from outside, many streams, idle, memory, int8 vs float32)
and issue 7's questions (ingest, batching, start-up, the alternatives, QEMU arm64); the
questions and their order are :data:`bench.agent.report.QUESTIONS`, ``--only`` picks some.

In-process parts run in child processes, once on the ``agent/`` of ``--baseline`` ("before")
and once on this checkout's ("after"). A question module's ``child_<kind>`` functions are
its children's entry points (``--child KIND SPEC``), collected into :data:`CHILDREN`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Optional

from bench.agent import models, report, trees
from bench.agent.common import LSTM
from bench.agent.context import Run
from bench.harness.broker import Mosquitto
from bench.harness.children import ChildFn, Runner, child_main
from bench.harness.machine import cpu_model, memory_gib, packages
from bench.harness.paths import REPO
from bench.harness.proc import load_avg

__all__ = ["CHILDREN", "main"]

SCRIPT = REPO / "bench" / "agent_bench.py"
#: Questions that run only when asked for (``--instructions``, ``--qemu``, or ``--only``).
ON_REQUEST = ("instructions", "qemu")


def _children(modules: list[ModuleType]) -> dict[str, ChildFn]:
    """Every ``child_<kind>`` function defined in ``modules``, by kind."""
    table: dict[str, ChildFn] = {}
    for module in modules:
        for name, fn in vars(module).items():
            if not name.startswith("child_") or getattr(fn, "__module__", "") != module.__name__:
                continue
            kind = name.removeprefix("child_")
            if kind in table:
                raise RuntimeError(f"two children named {kind!r} ({module.__name__})")
            table[kind] = fn
    return table


#: The children, by the KIND of ``--child KIND SPEC``: ``prepare`` and the questions'.
CHILDREN: dict[str, ChildFn] = _children(
    [models, *(m for name in report.QUESTIONS if (m := report.question(name)) is not None)]
)


def parser() -> argparse.ArgumentParser:
    """``bench/run``'s options."""
    p = argparse.ArgumentParser(
        prog="bench/run", description="Agent benchmark: what the agent costs beyond the model."
    )
    p.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="fewer rounds and readings: a smoke run")
    p.add_argument("--baseline", default="HEAD", help="git revision for 'before' (default HEAD)")
    p.add_argument(
        "--only",
        type=_names,
        metavar="NAME[,NAME]",
        help=f"run only these questions (of: {', '.join(report.QUESTIONS)}); the results file "
        "has only their sections",
    )
    p.add_argument(
        "--qemu",
        choices=("auto", "on", "off"),
        default="auto",
        help="the questions under QEMU arm64 (auto: when run as root)",
    )
    p.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per forecast with valgrind (about 5 min more)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep models, logs and results.json here (a later run with the same DIR reuses "
        "the models)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="the markdown (default bench/RESULTS.md; with --only, RESULTS.md in the work dir)",
    )
    p.add_argument("--render-from", type=Path, help="rewrite the markdown from results.json")
    return p


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in report.QUESTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown question {', '.join(unknown) or text!r}; of: {', '.join(report.QUESTIONS)}"
        )
    return names


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark (or a child of it, or only the rendering)."""
    args = parser().parse_args(argv)
    if args.child:
        return child_main(CHILDREN, *args.child)
    if args.render_from:
        args.out = args.out or REPO / "bench" / "RESULTS.md"
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
    """The models (the ``prepare`` child), or those an earlier run left in the work dir
    (when :mod:`bench.agent.models`, which says what to make, did not change since)."""
    kept = run.work / "prepared.json"
    stamp = hashlib.sha256(Path(models.__file__ or "").read_bytes()).hexdigest()[:16]
    old = json.loads(kept.read_text()) if kept.exists() else {}
    bundles = old.get("bundles") or {}
    if (
        old.get("stamp") == stamp
        and bundles
        and all(Path(p).exists() for p in bundles.values() if isinstance(p, str))
    ):
        print(f"models: reusing those of {kept}", flush=True)
        run.prep = bundles
    else:
        print("preparing models (TensorFlow, conversions) ...", flush=True)
        spec = {"work": str(run.work), "label": "LSTM(64)x48 + bundles"}
        run.prep = run.child("prepare", spec, timeout_s=1200) or {}
        kept.write_text(json.dumps({"stamp": stamp, "bundles": run.prep}))
    run.r["models"] = {
        "demo": "demo room (dynamic, 24x2 -> 12)",
        "lstm": f"LSTM({LSTM[0]}) x window {LSTM[1]} (float32, 3 features -> 12)",
    }
    run.r["tflite_models"] = {"demo": "demo room (float32)", "lstm": run.r["models"]["lstm"]}


def selected(args: argparse.Namespace) -> list[str]:
    """The questions this run asks, in :data:`report.QUESTIONS` order."""
    if args.only:
        return [name for name in report.QUESTIONS if name in args.only]
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    asked = {
        "instructions": args.instructions,
        "qemu": args.qemu == "on" or (args.qemu == "auto" and as_root),
    }
    return [n for n in report.QUESTIONS if n not in ON_REQUEST or asked[n]]


def _ask(run: Run, name: str, module: ModuleType) -> None:
    """One question; a question that raises is a failure of the run, not its end."""
    began = time.monotonic()
    try:
        module.measure(run)
    except Exception as exc:  # the other questions still run
        traceback.print_exc()
        run.runner.failures.append(f"{name}: {type(exc).__name__}: {exc}")
        return
    run.r["ran"].append(name)
    run.r.setdefault("minutes", {})[name] = round((time.monotonic() - began) / 60, 2)


def _questions(run: Run, names: list[str]) -> None:
    broker = Mosquitto()
    broker.start()
    run.port = broker.port
    run.r["host"] = host_lines(broker)
    run.r["ran"] = []
    try:
        for i, name in enumerate(names, 1):
            module = report.question(name)
            if module is None:
                print(f"[{i}/{len(names)}] {name}: not in this checkout, skipped", flush=True)
                continue
            print(f"[{i}/{len(names)}] {name} ...", flush=True)
            _ask(run, name, module)
    finally:
        broker.close()


def run_all(args: argparse.Namespace) -> int:
    """The questions on both trees; writes ``--out`` and ``results.json`` in the work dir."""
    began = time.monotonic()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sensorcast-agentbench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.out is None:  # a run of some questions does not replace the whole run's file
        args.out = work / "RESULTS.md" if args.only else REPO / "bench" / "RESULTS.md"
    before = trees.baseline(args.baseline, work / "before")
    after = trees.snapshot(work / "after")
    run = Run(work, Runner(work, SCRIPT), {"before": before, "after": after}, args.quick)
    run.r.update(
        started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        load_start=load_avg(),
        quick=args.quick,
        only=args.only,
        baseline=args.baseline,
        baseline_rev=before.rev,
        before={"rev": before.rev, "package": before.package},
        settings={"n": run.n, "rounds": run.rounds_per_turn, "turns": run.turns},
    )
    _prepare(run)
    _questions(run, selected(args))
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
