"""Question 1 without the noise (``--instructions``): CPU instructions per forecast, before
and after, counted by valgrind's callgrind.

Timings on a shared machine move by 10-30 % between runs; instruction counts do not. The
``steps`` child runs the whole path (:mod:`bench.agent.path`'s three variants) for ``n``
forecasts after its window filled; it runs twice per tree and variant under callgrind, with
``n`` = 100 and 600, and the difference of the two counts divided by the difference of the
forecasts made is what one forecast costs, start-up and imports cancelled out. OpenBLAS
gets one thread (``OPENBLAS_NUM_THREADS=1``): its idle worker threads spin for as long as the
machine lets them, which would count time, not work. Slow (callgrind runs Python about 50x
slower): about 5 min.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from bench.agent.context import Run
from bench.agent.drive import driver
from bench.agent.path import VARIANTS, whole_path
from bench.harness.children import Runner, Where
from bench.harness.markdown import table

__all__ = ["child_steps", "measure", "render"]

STEPS = (100, 600)  #: forecasts of the short and the long run
LABELS = {
    "agent_path": "whole path",
    "agent_path_memory_outbox": "whole path, outbox in memory",
    "agent_compute": "compute path (no MQTT poll, no outbox, no send)",
}


def child_steps(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``n`` steps of the whole path of ``variant`` (after the warm-up); forecasts made."""
    drv = driver(spec)
    work = Path(tempfile.mkdtemp(prefix="sensorcast-steps-"))
    runtime = drv.load_runtime("litert")
    service, step = whole_path(drv, spec["variant"], spec, runtime, work, 0)
    for _ in range(spec["n"]):
        step()
    made = drv.forecasts(service, "s0")
    drv.close(service, None if spec["variant"] == "agent_compute" else 5.0)
    shutil.rmtree(work, ignore_errors=True)
    return {"forecasts": made}


def _count(
    runner: Runner, spec: dict[str, Any], tag: str, where: Where
) -> Optional[tuple[int, int]]:
    """(instructions, forecasts) of one ``steps`` child under callgrind, None if it failed."""
    res = runner.child("steps", spec, tag=tag, where=where)
    log = (where.host / f"{tag}.stderr.txt").read_text(errors="replace")
    found = re.findall(r"Collected : (\d+)", log)
    if res is None or not found:
        return None
    return int(found[-1]), int(res["forecasts"])


def measure(run: Run) -> None:
    """Every variant on both trees, 2 callgrind runs each; ``run.r["instructions"]``."""
    if shutil.which("valgrind") is None:
        run.r["instructions"] = {"error": "valgrind is not installed"}
        return
    work = run.work / "instructions"
    work.mkdir(exist_ok=True)
    runner = Runner(work, run.runner.script, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    where = Where(
        ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
        work,
        str(work),
        str(run.runner.script),
    )
    demo = str(run.bundles()["demo"])
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        for side, tree in run.trees.items():
            counts = []
            for n in STEPS:
                spec = {
                    **tree.spec(),
                    "bundle": demo,
                    "port": run.port,
                    "n": n,
                    "variant": variant,
                    "label": f"{variant} {side} {n}",
                }
                counts.append(_count(runner, spec, f"steps-{variant}-{side}-{n}", where))
            short, long = counts
            if short and long and long[1] > short[1]:
                out.setdefault(variant, {})[side] = (long[0] - short[0]) / (long[1] - short[1])
    run.runner.failures += runner.failures
    run.r["instructions"] = out


def render(r: dict[str, Any]) -> list[str]:
    """The instructions table, if they were counted."""
    got = r.get("instructions")
    if not got:
        return []
    intro = [
        "Instructions per forecast (valgrind callgrind, the demo bundle; `--instructions`): "
        "the same work counted instead of timed, so the shared machine's load does not move "
        f"it. Difference of a {STEPS[1]}- and a {STEPS[0]}-forecast run of the same path, "
        "divided by the forecasts between them; OpenBLAS on one thread.",
        "",
    ]
    if "error" in got:
        return [*intro, f"Not counted: {got['error']}.", ""]
    rows = []
    for variant, label in LABELS.items():
        d = got.get(variant, {})
        b, a = d.get("before"), d.get("after")
        change = f"{(a / b - 1) * 100:+.1f} %" if a and b else "-"
        rows.append([label, f"{b:,.0f}" if b else "-", f"{a:,.0f}" if a else "-", change])
    return [*intro, *table(["path", "before", "after", "change"], rows), ""]
