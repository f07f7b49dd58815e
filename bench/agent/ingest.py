"""Question 2, ingest: readings per second into the windows, in process and end to end.

In process (child): ``Window.add`` alone, and batches of two readings through the
``Service``'s hot path (``Pipeline.ingest``), forecasts included. End to end (parent):
``mosquitto_pub -l`` pinned to core 1 through Mosquitto into ``sensorcast run`` pinned to
core 0, readings accepted per second and per CPU second of the agent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from bench.agent.common import agent_config, manifest, payloads, start_agent
from bench.agent.context import Run
from bench.agent.drive import driver
from bench.agent.trees import Tree
from bench.harness.broker import subscriber
from bench.harness.markdown import table
from bench.harness.proc import cpu_seconds, wait_for
from bench.harness.timing import spread

__all__ = ["child_window", "measure", "measure_ingest", "render"]

PER_SLOT = 10  #: readings per feature per period, in process
PER_MESSAGE_SLOT = 100  #: messages per period end to end: a forecast every 100 messages


def _rate(rounds: list[float]) -> dict[str, Any]:
    s = spread(rounds)
    return {"per_s": s["median"], "min": s["min"], "max": s["max"], "rounds": rounds}


def _per_second(run: Callable[[], float], n: int, rounds: int) -> dict[str, Any]:
    """Readings per second over ``rounds`` runs of ``n`` readings: median, min, max, rounds."""
    return _rate([n / run() for _ in range(rounds)])


def merge_window(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's window children pooled: every rate's rounds together."""
    out = dict(results[0])
    for key in ("window_add", "service_ingest"):
        out[key] = _rate([x for r in results for x in r[key]["rounds"]])
    return out


def child_window(spec: dict[str, Any]) -> dict[str, Any]:
    """Windowing in process: ``Window.add`` alone, and through the service's hot path."""
    drv = driver(spec)
    n, rounds = spec["n"], spec["rounds"]
    feats, period = 2, 300.0
    tl = (1.7e9 + (np.arange(n) // feats) * (period / PER_SLOT)).tolist()
    fl = (np.arange(n) % feats).tolist()
    vl = (21.0 + np.random.default_rng(1).normal(0, 1, n)).tolist()

    def window_add() -> float:
        add = drv.window(feats, 24, period).add
        t0 = time.perf_counter()
        for i in range(n):
            add(fl[i], tl[i], vl[i], 2e9)
        return time.perf_counter() - t0

    res: dict[str, Any] = {"window_add": _per_second(window_add, n, rounds)}
    work = Path(tempfile.mkdtemp(prefix="sensorcast-win-"))
    cfg = agent_config(
        work / "a.toml", spec["port"], [("s0", Path(spec["bundle"]), "x")], "winbench"
    )
    batches = [
        [drv.reading(0, tl[i], vl[i]), drv.reading(1, tl[i], vl[i] + 27)] for i in range(0, n, 2)
    ]

    def service_ingest() -> float:
        service = drv.service(cfg, None)
        # forecasts made on the way are kept in memory here
        drv.use_outbox(service, drv.outbox(None), publishers_only=False)
        t0 = time.perf_counter()
        for b in batches:
            drv.ingest(service, b, 2e9)
        took = time.perf_counter() - t0
        res["service_forecasts"] = drv.forecasts(service, "s0")
        drv.close(service, None)
        return took

    res["service_ingest"] = _per_second(service_ingest, n, rounds)
    shutil.rmtree(work, ignore_errors=True)
    return res


def measure_ingest(
    port: int, tree: Tree, bundle: Path, work: Path, messages: int, tag: str
) -> dict[str, Any]:
    """Readings/s from ``mosquitto_pub -l`` through Mosquitto into the agent (one core).

    ``tag`` names the run's device, topic, state and files: each run starts afresh (a
    restored window would refuse a replay of the same timestamps).
    """
    m = manifest(bundle)
    device, topic = f"ingest-{tag}", f"ingest/{tag}"
    client, got = subscriber(port, f"sensorcast/{device}/+/forecast")
    cfg = agent_config(work / f"ingest-{tag}.toml", port, [("s0", bundle, topic)], device)
    log_path = work / f"ingest-{tag}.log"
    with log_path.open("wb") as log:
        proc = start_agent(tree, sys.executable, cfg, cpu=0, log=log)
        time.sleep(1.5)
        lines = work / f"ingest-{tag}.txt"
        start = (np.floor(time.time() / m.period_s) - messages / PER_MESSAGE_SLOT - 10) * m.period_s
        step = m.period_s / PER_MESSAGE_SLOT
        feed = payloads(list(m.features), float(start), step, messages)
        lines.write_bytes(b"\n".join(feed) + b"\n")
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        pub_s = _publish_lines(port, topic, lines)
        wait_for(_settled(got), 600, every_s=0.05)
        t_last = got[-1][0] if got else time.monotonic()
        cpu_s = cpu_seconds(proc.pid) - cpu0
        proc.terminate()
        proc.wait(60)
    client.loop_stop()
    client.disconnect()
    return _ingest_result(
        log_path.read_text(errors="replace"),
        messages,
        len(m.features),
        {
            "forecasts": len(got),
            "forecasts_expected": messages // PER_MESSAGE_SLOT - m.window,
            "seconds": t_last - t0,
            "publisher_s": pub_s,
            "cpu_s": cpu_s,
        },
    )


def _publish_lines(port: int, topic: str, lines: Path) -> float:
    """``mosquitto_pub -l`` of a file, pinned to core 1; seconds it took."""
    pub = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-l", "-q", "0"]
    if shutil.which("taskset"):
        pub = ["taskset", "-c", "1", *pub]
    t0 = time.monotonic()
    with lines.open("rb") as stdin:
        subprocess.run(pub, stdin=stdin, check=True)
    return time.monotonic() - t0


def _settled(got: list[tuple[float, bytes]]) -> Callable[[], bool]:
    """True once no forecast has arrived for 3 s."""
    last = [0, time.monotonic()]

    def settled() -> bool:
        if len(got) != last[0]:
            last[0], last[1] = len(got), time.monotonic()
        return time.monotonic() - last[1] > 3.0

    return settled


def _ingest_result(
    log: str, messages: int, features: int, figures: dict[str, Any]
) -> dict[str, Any]:
    """The figures with what the agent's summary lines say it accepted and shed."""
    found = re.findall(r"(\d+) readings accepted", log)
    accepted = int(found[-1]) if found else None
    shed = re.findall(r"load shed: (\d+)", log)
    cpu_s = figures["cpu_s"]
    return {
        **figures,
        "readings_sent": messages * features,
        "shed": int(shed[-1]) if shed else 0,
        "accepted": accepted,
        "per_s": (accepted or 0) / figures["seconds"],
        "per_cpu_s": (accepted or 0) / cpu_s if cpu_s > 0 else None,
    }


# ---------------------------------------------------------------------------------------------
# parent: measure and render


def measure(run: Run) -> None:
    """In process on both trees, then end to end on both trees (the demo bundle)."""
    demo = run.bundles()["demo"]
    assert demo is not None
    n = 100_000 if run.quick else 200_000
    specs = {
        side: {
            **tree.spec(),
            "bundle": demo,
            "n": n,
            "port": run.port,
            "rounds": run.rounds_per_turn,
            "label": side,
        }
        for side, tree in run.trees.items()
    }
    run.r["window"] = run.alternate("window", specs, merge_window)
    messages = 30_000 if run.quick else 150_000
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in run.trees}
    for turn in range(run.turns):  # the sides take turns, as the children do
        for side, tree in run.trees.items():
            got = measure_ingest(run.port, tree, Path(demo), run.work, messages, f"{side}{turn}")
            runs[side].append(got)
    run.r["ingest"] = {side: median_run(got) for side, got in runs.items()}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median readings/s (the lower one of an even count), with every
    run's readings/s and readings per agent CPU s."""
    ranked = sorted(runs, key=lambda d: d["per_s"])
    return {
        **ranked[(len(ranked) - 1) // 2],
        "per_s_runs": [d["per_s"] for d in runs],
        "per_cpu_s_runs": [d["per_cpu_s"] or 0 for d in runs],
    }


E2E = (
    "End to end: `mosquitto_pub -l` (C, pinned to core 1) publishes JSON readings (2 features "
    "each, 100 messages per period, so a forecast every 200 readings) through Mosquitto to "
    "`sensorcast run` pinned to core 0 (`taskset`); rate = readings accepted / (first "
    "publish to the last forecast received). When the feed outruns the agent, its loop "
    "falls behind and it sheds whole messages before parsing them (counted; the flood "
    "protection): the rate is then the agent's saturated throughput. 'Readings per agent "
    "CPU s' is the least noisy figure. Each side ran several times, taking turns with the "
    "other: the row is the run with the median rate, the range of all runs in brackets. "
    "Target >= 20,000 readings/s."
)


def _range(values: Optional[list[float]]) -> str:
    if not values or len(values) < 2:
        return ""
    return f" ({min(values):,.0f}-{max(values):,.0f})"


def render(r: dict[str, Any]) -> list[str]:
    """Section 2: in process and end to end, before and after."""
    w = r.get("window", {})
    rows = []
    for key, desc, target in (
        ("window_add", "`Window.add` alone", ">= 1,000,000"),
        ("service_ingest", "the service's ingest (batches of 2 readings, forecasts included)", "-"),
    ):
        cells = [desc]
        for side in ("before", "after"):
            d = (w.get(side) or {}).get(key)
            cells.append(f"{d['per_s']:,.0f} ({d['min']:,.0f}-{d['max']:,.0f})" if d else "-")
        rows.append([*cells, target])
    out = [
        "## 2. Ingest",
        "",
        "In process (2 features, 10 readings per feature per period; readings/s):",
        "",
        *table(["", "before", "after", "target"], rows),
        "",
        E2E,
        "",
    ]
    head = [
        "",
        "readings sent",
        "accepted",
        "shed (messages)",
        "forecasts (expected)",
        "seconds",
        "readings/s",
        "agent CPU s",
        "readings per agent CPU s",
        "publisher alone (s)",
    ]
    rows = []
    for side in ("before", "after"):
        d = r.get("ingest", {}).get(side)
        if d:
            rows.append(
                [
                    side,
                    f"{d['readings_sent']:,}",
                    f"{d['accepted'] or 0:,}",
                    d.get("shed", "?"),
                    f"{d['forecasts']} ({d['forecasts_expected']})",
                    f"{d['seconds']:.1f}",
                    f"**{d['per_s']:,.0f}**{_range(d.get('per_s_runs'))}",
                    f"{d.get('cpu_s', 0):.1f}",
                    f"{d.get('per_cpu_s') or 0:,.0f}{_range(d.get('per_cpu_s_runs'))}",
                    f"{d['publisher_s']:.1f}",
                ]
            )
    return [*out, *table(head, rows), ""]
