"""Target 2 of issue 18, the whole path measured from outside: the agent's CPU per forecast.

``sensorcast run`` on each tree with one stream. A feeder in the parent publishes JSON
readings (every feature in one message, data timestamps one period apart, so that each message
closes a period: one forecast per message) to the run's Mosquitto at a steady rate; a
subscriber (QoS 1) counts the forecasts, which the agent publishes at QoS 1, so the broker
acknowledges each. After a warm-up (the window filled, forecasts flowing), the agent's CPU
time (``utime + stime`` of its process, all threads) over the next ``N`` forecasts, per
forecast, against a bare ``set_tensor``/``invoke``/``get_tensor`` loop's CPU per invoke on
the same bundle (a child, the same runtime and one thread, as the agent runs it).
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from bench.agent.common import agent_config, manifest, payloads, start_agent
from bench.agent.context import Run
from bench.agent.drive import driver
from bench.agent.trees import Tree
from bench.harness.broker import subscriber
from bench.harness.markdown import fr, table
from bench.harness.proc import cpu_seconds, wait_for

__all__ = ["RATE", "TARGET", "child_bare_cpu", "measure", "measure_outside", "render", "targets"]

RATE = 300.0  #: messages (= forecasts) per second the feeder publishes
WARMUP = 100  #: forecasts before the measured span (after the window filled)
TARGET = 2.0  #: agent CPU per forecast / bare CPU per invoke, LSTM(64) x 48


def child_bare_cpu(spec: dict[str, Any]) -> dict[str, Any]:
    """Process CPU time per bare invoke (µs): rounds of ``n`` calls, after a warm-up."""
    drv = driver(spec)
    runtime = drv.load_runtime(None)
    bundle = drv.read_bundle(Path(spec["bundle"]))
    interp = runtime.interpreter(bundle.model, 1)
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    x = np.zeros(inp["shape"], dtype=inp["dtype"])
    ii, oi = inp["index"], outp["index"]
    n = spec["n"]
    rounds = []
    for r in range(spec["rounds"] + 1):
        c0 = time.process_time()
        for _ in range(n):
            interp.set_tensor(ii, x)
            interp.invoke()
            interp.get_tensor(oi)
        if r:  # the first round warms up
            rounds.append((time.process_time() - c0) / n * 1e6)
    return {
        "runtime": f"{runtime.name} {runtime.version}",
        "cpu_us": statistics.median(rounds),
        "rounds": rounds,
    }


def _count(got: list[tuple[float, bytes]], at_least: int) -> bool:
    return len(got) >= at_least


def _quiet(got: list[tuple[float, bytes]], quiet_s: float) -> Callable[[], bool]:
    """True once no forecast arrived for ``quiet_s`` seconds."""
    last = [len(got), time.monotonic()]

    def quiet() -> bool:
        if len(got) != last[0]:
            last[0], last[1] = len(got), time.monotonic()
        return time.monotonic() - last[1] >= quiet_s

    return quiet


def _feed(
    feeder: Any, topic: str, msgs: list[bytes], got: list[tuple[float, bytes]], want: int
) -> bool:
    """Publish ``msgs`` at :data:`RATE`, then wait until ``want`` forecasts arrived."""
    t0 = time.monotonic()
    for i, msg in enumerate(msgs):
        delay = t0 + i / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        feeder.publish(topic, msg, qos=0)
    return wait_for(functools.partial(_count, got, want), 60 + len(msgs) / RATE, every_s=0.002)


def measure_outside(
    port: int, tree: Tree, bundle: Path, work: Path, n: int, tag: str
) -> dict[str, Any]:
    """One ``sensorcast run``: agent CPU per forecast (µs) over ``n`` forecasts."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    m = manifest(bundle)
    device, topic = f"outside-{tag}", f"outside/{tag}"
    status, online = subscriber(port, f"sensorcast/{device}/status")
    client, got = subscriber(port, f"sensorcast/{device}/+/forecast")
    cfg = agent_config(work / f"outside-{tag}.toml", port, [("s0", bundle, topic)], device)
    total = m.window + WARMUP + n + 2
    start = (np.floor(time.time() / m.period_s) - total - 10) * m.period_s
    feed = payloads(list(m.features), float(start), m.period_s, total)
    feeder = paho.Client(CallbackAPIVersion.VERSION2)
    feeder.connect("127.0.0.1", port)
    feeder.loop_start()
    out: dict[str, Any] = {"n": n, "rate": RATE}
    with (work / f"outside-{tag}.log").open("wb") as log:
        proc = start_agent(tree, sys.executable, cfg, log=log)
        try:
            if not wait_for(lambda: any(p == b"online" for _, p in online), 60, every_s=0.01):
                return {"error": "no online within 60 s"}
            split = m.window + WARMUP
            if not _feed(feeder, topic, feed[:split], got, WARMUP // 2):
                return {"error": f"only {len(got)} warm-up forecasts"}
            wait_for(_quiet(got, 0.3), 10, every_s=0.01)  # the warm-up's tail is done
            count0, cpu0, t0 = len(got), cpu_seconds(proc.pid), time.monotonic()
            done = _feed(feeder, topic, feed[split:], got, count0 + n)
            cpu1, count1, t1 = cpu_seconds(proc.pid), len(got), time.monotonic()
            made = count1 - count0
            out.update(
                complete=done,
                forecasts=made,
                cpu_s=cpu1 - cpu0,
                seconds=t1 - t0,
                cpu_us=(cpu1 - cpu0) / made * 1e6 if made else None,
            )
        finally:
            proc.terminate()
            proc.wait(30)
            for c in (feeder, client, status):
                c.loop_stop()
                c.disconnect()
    return out


# ---------------------------------------------------------------------------------------------
# parent: measure, render, targets


def _median(runs: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    ok = [d for d in runs if d.get("cpu_us")]
    if not ok:
        return runs[0] if runs else None
    ranked = sorted(ok, key=lambda d: d["cpu_us"])
    return {**ranked[(len(ranked) - 1) // 2], "cpu_us_runs": [d["cpu_us"] for d in ok]}


def measure(run: Run) -> None:
    """Both trees, both models, the sides taking turns; the bare loop on each bundle."""
    n = 1200 if run.quick else 5000
    turns = 1 if run.quick else run.turns  # --quick stays under 10 min
    got: dict[str, Any] = {}
    for key, bundle in run.bundles().items():
        if bundle is None:
            continue
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in run.trees}
        bare: list[dict[str, Any]] = []
        for turn in range(turns):
            spec = {**run.after.spec(), "bundle": bundle, "n": run.n, "rounds": run.rounds}
            res = run.child("bare_cpu", {**spec, "label": key})
            if res is not None:
                bare.append(res)
            for side, tree in run.trees.items():
                print(f"  outside {key} {side} ...", flush=True)
                d = measure_outside(run.port, tree, Path(bundle), run.work, n, f"{key}{side}{turn}")
                if "error" in d:
                    run.runner.failures.append(f"outside {key} {side}: {d['error']}")
                runs[side].append(d)
        got[key] = {
            "bare_cpu_us": statistics.median(b["cpu_us"] for b in bare) if bare else None,
            "bare_runs": [b["cpu_us"] for b in bare],
            **{side: _median(r) for side, r in runs.items()},
        }
    run.r["outside"] = got


def _cell(d: Optional[dict[str, Any]]) -> str:
    if not d or not d.get("cpu_us"):
        return "-"
    runs = d.get("cpu_us_runs") or []
    spread = f" ({min(runs):.0f}-{max(runs):.0f})" if len(runs) > 1 else ""
    return f"{d['cpu_us']:.0f}{spread}"


def _runs(got: dict[str, Any]) -> str:
    runs = max(
        (len(s.get("cpu_us_runs") or []) for d in got.values() for s in _sides(d)), default=0
    )
    if runs < 2:
        return ""
    return (
        f"{runs} runs per side, taking turns with the other: the median run, the range in "
        "brackets. "
    )


def _sides(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in (d.get("before"), d.get("after")) if s]


def _ratio(r: dict[str, Any], key: str, side: str) -> Optional[float]:
    d = (r.get("outside") or {}).get(key) or {}
    agent, bare = (d.get(side) or {}).get("cpu_us"), d.get("bare_cpu_us")
    return agent / bare if agent and bare else None


def render(r: dict[str, Any]) -> list[str]:
    """The section: agent CPU per forecast, bare CPU per invoke, their ratio, both trees."""
    got = r.get("outside")
    if not got:
        return []
    rows = []
    for key, d in got.items():
        label = r.get("models", {}).get(key, key)
        bare = d.get("bare_cpu_us")
        rows.append(
            [
                label,
                f"{bare:.0f}" if bare else "-",
                _cell(d.get("before")),
                fr(_ratio(r, key, "before")),
                _cell(d.get("after")),
                f"**{fr(_ratio(r, key, 'after'))}**",
            ]
        )
    n = next((s.get("n") for d in got.values() for s in _sides(d)), 0)
    return [
        "## 2. Whole path, one stream, measured from outside",
        "",
        f"`sensorcast run` with one stream; a feeder publishes one JSON message per period (every "
        f"feature in it, so each message closes a period: a forecast per message) to Mosquitto "
        f"at {RATE:.0f} messages/s; a subscriber (QoS 1) counts the forecasts, which the broker "
        f"acknowledges to the agent. After {WARMUP} warm-up forecasts, the agent process's CPU "
        f"time (utime + stime, all threads) over the next {n:,} forecasts, per forecast, in µs; "
        "bare = CPU time per `set_tensor`/`invoke`/`get_tensor` in a child on the same bundle "
        f"and runtime (one thread). {_runs(got)}Target: after <= {TARGET:.1f}x bare for "
        "LSTM(64) x 48.",
        "",
        *table(
            ["model", "bare CPU/invoke", "before", "ratio", "after", "ratio"],
            rows,
        ),
        "",
    ]


def targets(r: dict[str, Any]) -> list[tuple[str, str, Optional[bool]]]:
    """Target 2: LSTM(64) x 48, agent CPU per forecast / bare CPU per invoke <= 2.0x."""
    x = _ratio(r, "lstm", "after")
    rows: list[tuple[str, str, Optional[bool]]] = [
        (
            f"2. whole path from outside, CPU per forecast <= {TARGET:.1f}x bare invoke: LSTM",
            fr(x),
            None if x is None else x <= TARGET,
        )
    ]
    d = _ratio(r, "demo", "after")
    if d is not None:
        rows.append(("2. (the same, demo model; report only)", fr(d), None))
    return rows
