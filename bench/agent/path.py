"""Question 1, per forecast: the agent's whole path against a bare ``invoke()`` loop.

The child times, taking turns in each round: a bare ``set_tensor``/``invoke``/``get_tensor``
loop; each stage alone (parse, window, forecast, JSON, outbox, paho ``publish``); and the
whole path in the agent's own ``Service`` (an MQTT message handed to the stream's source,
then one ``Service.turn``), also with the outbox in memory and with forecasts dropped.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.agent.common import agent_config, payloads
from bench.agent.context import Run
from bench.agent.drive import Driver, NullBox, driver
from bench.agent.trees import Tree
from bench.harness.markdown import fr, ratio, table, us
from bench.harness.timing import Stage, interleaved, merge

__all__ = [
    "VARIANTS",
    "bare_loop",
    "child_path",
    "measure",
    "merge_path",
    "render",
    "stages",
    "whole_path",
]

#: The whole path three ways: as the agent runs, outbox in memory, and the compute path
#: (parse -> window -> forecast -> quality, band, anomaly -> JSON payload; no MQTT, no outbox).
VARIANTS = ("agent_path", "agent_path_memory_outbox", "agent_compute")


def child_path(spec: dict[str, Any]) -> dict[str, Any]:
    """Per forecast: bare invoke, each stage of the agent, and the agent's whole path (µs)."""
    drv = driver(spec)
    n, rounds = spec["n"], spec["rounds"]
    runtime = drv.load_runtime(spec.get("runtime"))
    bundle = drv.read_bundle(Path(spec["bundle"]))
    m = bundle.manifest
    work = Path(tempfile.mkdtemp(prefix="sensorcast-path-"))
    out: dict[str, Any] = {
        "runtime": f"{runtime.name} {runtime.version}",
        "model": bundle.label,
        "quantization": m.quantization,
    }
    stages: dict[str, Stage] = {"bare_invoke": (bare_loop(runtime, bundle.model), n, None)}
    closers: list[Callable[[], None]] = []
    stages.update(_stages(drv, bundle, runtime, work, spec["port"], n, closers))
    services = {}
    for variant in VARIANTS:
        service, step = whole_path(drv, variant, spec, runtime, work, rounds)
        services[variant] = service
        stages[variant] = (step, n, None)
    out["stages"] = interleaved(stages, rounds)
    for variant, service in services.items():
        out[f"{variant}_forecasts"] = drv.forecasts(service, "s0")
        flush = None if variant == "agent_compute" else 5.0
        left = drv.close(service, flush)
        if flush is not None:
            out[f"{variant}_outbox_left"] = left
    for close in closers:
        close()
    shutil.rmtree(work, ignore_errors=True)
    return out


def bare_loop(runtime: Any, model: bytes) -> Callable[[], None]:
    """A bare interpreter loop (``set_tensor``/``invoke``/``get_tensor``) on the model's
    bytes: the same runtime as the agent, one thread."""
    interp = runtime.interpreter(model, 1)
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    x = np.zeros(inp["shape"], dtype=inp["dtype"])
    ii, oi = inp["index"], outp["index"]

    def bare() -> None:
        interp.set_tensor(ii, x)
        interp.invoke()
        interp.get_tensor(oi)

    return bare


def _stages(
    drv: Driver,
    bundle: Any,
    runtime: Any,
    work: Path,
    port: int,
    n: int,
    closers: list[Callable[[], None]],
) -> dict[str, Stage]:
    """Each stage of the path alone; what they hold open goes to ``closers``."""
    m = bundle.manifest
    stages: dict[str, Stage] = {}
    sink: list[Any] = []
    source = drv.parser(m.features, sink.append)
    msgs = payloads(list(m.features), 1.7e9, m.period_s, 64)
    k = [0]

    def parse() -> None:  # one MQTT JSON message into readings, handed to a sink
        source.handle(msgs[k[0] & 63], 1.7e9)
        k[0] += 1

    stages["parse"] = (parse, n, sink.clear)
    window, move = _moving_window(drv, len(m.features), m.window, m.period_s)
    stages["window"] = (move, n, None)
    forecaster = drv.forecaster(bundle, runtime)
    view = window.view()
    stages["forecast"] = (lambda: forecaster.predict(view), n, None)
    values = forecaster.predict(view).copy()
    pub = drv.publisher(NullBox(), m.targets, m.period_s)
    stages["json"] = (lambda: pub.publish(bundle.label, 1.7e9, values), n, None)
    payload = b"x" * len(json.dumps({"v": values.tolist()})) + b"x" * 200
    box = drv.outbox(work / "box.db")
    closers.append(box.close)

    def put_ack() -> None:
        # One forecast's life in the outbox: stored, handed out to send (on disk by then),
        # forgotten when acked.
        msg_id = box.put("sensorcast/pi-1/room/forecast", payload, 1)
        box.pending(after=msg_id - 1, limit=1)
        box.ack(msg_id)

    stages["outbox_put_ack"] = (put_ack, n, None)
    stages["paho_publish"] = (_paho_publish(port, payload, closers), n, None)
    return stages


def _moving_window(
    drv: Driver, features: int, size: int, period_s: float
) -> tuple[Any, Callable[[], None]]:
    """A full window, and a call that adds every feature's reading a period later."""
    window = drv.window(features, size, period_s)
    ts = [1.7e9]
    fidx = list(range(features))

    def move() -> None:
        ts[0] += period_s
        for f in fidx:
            window.add(f, ts[0], 21.0 + f, 2e9)

    for _ in range(size + 1):
        move()
    return window, move


def _paho_publish(
    port: int, payload: bytes, closers: list[Callable[[], None]]
) -> Callable[[], Any]:
    """paho's ``publish`` QoS 1 to the broker: the hand-over to the client alone."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.connect("127.0.0.1", port)
    client.loop_start()
    while not client.is_connected():
        time.sleep(0.01)

    def close() -> None:
        client.loop_stop()
        client.disconnect()

    closers.append(close)
    return lambda: client.publish("bench/null", payload, qos=1)


def whole_path(
    drv: Driver, variant: str, spec: dict[str, Any], runtime: Any, work: Path, rounds: int
) -> tuple[Any, Callable[[], None]]:
    """A ``Service`` for ``variant`` with its window full, and one step of its whole path."""
    bundle = Path(spec["bundle"])
    m = drv.read_bundle(bundle).manifest
    cfg = agent_config(
        work / f"{variant}.toml",
        spec["port"],
        [("s0", bundle, f"bench/in/{variant}")],
        f"pathbench-{variant}",
    )
    service = drv.service(cfg, runtime)
    if variant == "agent_path_memory_outbox":
        drv.use_outbox(service, drv.outbox(None), publishers_only=False)
    elif variant == "agent_compute":
        drv.use_outbox(service, NullBox(), publishers_only=True)
    total = m.window + 5 + spec["n"] * (rounds + 1) + 10
    start = (np.floor(time.time() / m.period_s) - total - 10) * m.period_s
    feed = payloads(list(m.features), float(start), m.period_s, total)
    handle = drv.stream_input(service, 0)
    # The compute path: the loop's turn without the MQTT poll, the send and the heartbeat
    # (a baseline's driver without that seam runs the whole turn).
    compute = getattr(drv, "compute", None) if variant == "agent_compute" else None
    turn: Callable[[Any], None] = compute or drv.turn

    def whole(pos: list[int]) -> None:
        handle(feed[pos[0]], time.time())
        pos[0] += 1
        turn(service)

    step = functools.partial(whole, [0])
    for _ in range(m.window + 5):
        step()
    return service, step


# ---------------------------------------------------------------------------------------------
# parent: measure and render


def measure(run: Run) -> None:
    """Both trees on LiteRT for both models; the after tree on tflite-runtime if installed."""
    run.r["path"] = {}
    for key, bundle in run.bundles().items():
        if bundle:
            specs = {
                side: _spec(run, tree, bundle, "litert", f"{key} {side}", run.rounds_per_turn)
                for side, tree in run.trees.items()
            }
            run.r["path"][key] = run.alternate("path", specs, merge_path)
    run.r["path_tflite"] = {}
    if run.tflite_python:
        for key, bundle in run.f32_bundles().items():
            if bundle:
                label = f"{key} tflite-runtime"
                spec = _spec(run, run.after, bundle, "tflite-runtime", label, run.rounds)
                run.r["path_tflite"][key] = run.child("path", spec, python=run.tflite_python)


def merge_path(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's path children pooled: every stage's rounds together."""
    stages = results[0]["stages"]
    pooled = {k: merge([r["stages"][k] for r in results]) for k in stages}
    return {**results[0], "stages": pooled, "children": len(results)}


def _spec(
    run: Run, tree: Tree, bundle: str, runtime: str, label: str, rounds: int
) -> dict[str, Any]:
    return {
        **tree.spec(),
        "bundle": bundle,
        "n": run.n,
        "rounds": rounds,
        "port": run.port,
        "runtime": runtime,
        "label": label,
    }


def stages(r: dict[str, Any], key: str, side: str) -> dict[str, Any]:
    """The stage timings of model ``key`` on ``side`` (empty if that child failed)."""
    got: dict[str, Any] = (r["path"].get(key, {}).get(side) or {}).get("stages", {})
    return got


STAGES = (
    ("parse", "parse one MQTT JSON message (source)"),
    ("window", "window: one reading per feature, the window moves"),
    ("forecast", "forecast: normalize, invoke, de-normalize (`Forecaster.predict`)"),
    ("json", "JSON payload (`ForecastPublisher.publish`, outbox excluded)"),
    ("outbox_put_ack", "durable outbox: put + hand out + ack (SQLite WAL)"),
    ("paho_publish", "paho `publish` QoS 1 (hand-over to the client)"),
)
INTRO = (
    "Whole path: one MQTT JSON message (one reading per feature, one period later) handed to "
    "the stream's MQTT source -> the hand-over queue -> the pipeline's ingest -> window -> "
    "forecast (normalize, invoke, de-normalize) -> JSON -> durable outbox (SQLite on disk) -> "
    "paho `publish` to a real Mosquitto (acks handled on the next turn), in the agent's own "
    "`Service`, in process: the loop's `Service.turn` called directly (paho's reads and writes "
    "run in the turn). Bare: `set_tensor`, `invoke`, `get_tensor` on the same bundle, same "
    "runtime, 1 thread. LiteRT, XNNPACK on (the agent's default)."
)
AFTER_TABLE = (
    "Ratios are of wall-clock medians; the CPU-time ratio counts the process's CPU time (all "
    "threads) and is less sensitive to the other work on this machine. 'Outbox in memory': "
    "the same path with the outbox's SQLite replaced by its in-memory fallback (what "
    "durability costs). 'Compute path': the MQTT message parsed by the stream's source -> "
    "the hand-over queue -> window -> forecast (normalize, invoke, de-normalize, verified "
    "range) -> quality tracking, the band, fallback and anomaly checks -> the JSON payload, "
    "each payload then dropped: the loop's turn without the MQTT poll, the outbox and the "
    "send (issue 18's target 1)."
)


def render(r: dict[str, Any]) -> list[str]:
    """Section 1: the whole path before and after, stage by stage, tflite-runtime."""
    out = ["## 1. Per forecast: the agent's whole path vs a bare `invoke()` loop", "", INTRO, ""]
    head = [
        "model",
        "bare invoke",
        "agent path before",
        "agent path after",
        "ratio before",
        "ratio after",
        "ratio after, CPU time",
        "after, outbox in memory",
        "**after, compute path** (target <= 1.25x LSTM, <= 1.5x demo)",
    ]
    out += table(head, (_path_row(r, key, label) for key, label in r["models"].items()))
    out += [
        "",
        AFTER_TABLE,
        "",
        "Stage by stage (each timed alone, same bundle, the stages "
        "taking turns; wall µs, before -> after):",
        "",
        *_stage_table(r, EVERY, "us"),
        "",
        "The same in process CPU time per call (µs, all threads; before -> after), which the "
        "other work on a shared machine disturbs less:",
        "",
        *_stage_table(r, EVERY[:1] + EVERY[-3:], "cpu_us"),
        "",
    ]
    return out + render_tflite(r)


EVERY = (
    ("bare_invoke", "bare invoke (reference)"),
    *STAGES,
    ("agent_compute", "**compute path**: parse + window + forecast + quality/band + JSON"),
    ("agent_path_memory_outbox", "whole path, outbox in memory"),
    ("agent_path", "**whole path**"),
)


def _stage_table(r: dict[str, Any], rows: tuple[tuple[str, str], ...], field: str) -> list[str]:
    """Stages down, models across: ``field`` (``us`` or ``cpu_us``) before -> after."""
    out = []
    for stage, desc in rows:
        cells = [desc]
        for key in r["models"]:
            b, c = stages(r, key, "before").get(stage), stages(r, key, "after").get(stage)
            cells.append(f"{b[field]:.1f} -> {c[field]:.1f}" if b and c else us(c))
        out.append(cells)
    return table(["stage", *r["models"].values()], out)


def _path_row(r: dict[str, Any], key: str, label: str) -> list[str]:
    b, c = stages(r, key, "before"), stages(r, key, "after")
    bare = c.get("bare_invoke")
    cells = [
        label,
        us(bare),
        us(b.get("agent_path")),
        us(c.get("agent_path")),
        fr(ratio(b.get("agent_path"), b.get("bare_invoke"))),
        fr(ratio(c.get("agent_path"), bare)),
        fr(ratio(c.get("agent_path"), bare, "cpu_us")),
    ]
    d = c.get("agent_path_memory_outbox")
    cells.append(f"{d['us']:.1f} = {fr(ratio(d, bare))}" if d else "-")
    d = c.get("agent_compute")
    cpu = fr(ratio(d, bare, "cpu_us"))
    cells.append(f"{d['us']:.1f} = **{fr(ratio(d, bare))}** (CPU {cpu})" if d else "-")
    return cells


def render_tflite(r: dict[str, Any]) -> list[str]:
    """The per-forecast table on tflite-runtime 2.14 (after tree), if it ran."""
    tfl = r.get("path_tflite", {})
    if not tfl:
        return []
    rows = []
    for key, res in tfl.items():
        s = (res or {}).get("stages", {})
        rows.append(
            [
                r["tflite_models"].get(key, key),
                us(s.get("bare_invoke")),
                us(s.get("forecast")),
                us(s.get("agent_path")),
                fr(ratio(s.get("agent_path"), s.get("bare_invoke"))),
            ]
        )
    return [
        "The same on tflite-runtime 2.14 (`.venv-tflite`, numpy < 2; float32 bundles, since it "
        "refuses the dynamic-range demo bundle's op versions):",
        "",
        *table(["model", "bare invoke", "forecast", "agent path", "ratio"], rows),
        "",
    ]
