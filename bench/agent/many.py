"""Question: 100 streams sharing one model on the same tick, the whole path through Mosquitto
(:data:`INTRO` says how), and one stream paced, for comparison. ``python -m bench.agent.many``
runs it alone, with a py-spy stage split (``--profile``). Warm-up: each stream gets ``window
+ 2`` periods of history at once (past timestamps), so its window is full within a second."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench.agent.common import STREAMS, agent_config, manifest, start_agent
from bench.agent.context import Run
from bench.agent.spy import record, stage_split
from bench.agent.trees import Tree, use_tree
from bench.harness.broker import subscriber
from bench.harness.markdown import table
from bench.harness.proc import cpu_seconds, wait_for

__all__ = ["child_many", "measure", "measure_many", "render", "targets"]

PERIOD_S = 1.0  #: the bundles' period: 100 forecasts per second
CLOSE_DELAY = 0.2  #: close_delay_s, as a share of the period
TARGET = 1.5  #: issue 18, target 3: agent CPU per forecast <= 1.5x batched invoke per window
INTRO = (
    f"`sensorcast run` serves {STREAMS} streams of one LSTM(64) x 48 bundle converted with "
    f"`--batch {STREAMS}` (float32, period {PERIOD_S:g} s). A paho client sends one JSON "
    "reading per stream per period through Mosquitto, mid-period, with wall-clock "
    "timestamps; the agent's tick closes the 100 periods together, forecasts them in one "
    "`predict_batch` call and publishes 100 forecasts (QoS 1, acknowledged by the broker). "
    "Figure: the agent process's CPU time (utime + stime, all threads) per forecast over "
    "the measured periods, subtracting nothing (reading, forecasting, outbox, MQTT, ticks), "
    "against the bare batched invoke's CPU per window (the bundle's batch signature called "
    "in a child, / 100). '1 stream': the single-window bundle, readings replayed at 400/s "
    "(one forecast each) vs a bare `set_tensor/invoke/get_tensor`. Target 3: <= 1.5x."
)


def child_many(spec: dict[str, Any]) -> dict[str, Any]:
    """``do: convert``: the LSTM's ``.keras`` converted with :data:`PERIOD_S` (batch 100 and
    single); ``do: invoke``: the bare invoke's CPU per call of each bundle in ``bundles``."""
    if spec["do"] == "convert":
        return _convert(spec)
    use_tree(spec)
    return {key: _bare_cpu(Path(p), spec["n"]) for key, p in spec["bundles"].items()}


def _convert(spec: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sensorcast.convert.cli import main as convert_main

    out: dict[str, Any] = {}
    base = [spec["keras"], "--features", "a,b,c", "--targets", "a", "--quantize", "float32"]
    for key, extra in (("batch", ["--batch", str(STREAMS)]), ("single", [])):
        dest = Path(spec["work"]) / f"many-{key}.tflite"
        args = [base[0], "-o", str(dest), "--quiet", *base[1:], "--period", str(PERIOD_S)]
        out[key] = str(dest) if convert_main([*args, *extra]) == 0 else None
    return out


def _bare_cpu(path: Path, n: int) -> dict[str, Any]:
    """CPU µs per call of a bare invoke (the batch signature for a batched bundle), median of
    5 rounds of ``n`` calls."""
    from sensorcast.agent.forecast.manifest import read_bundle
    from sensorcast.agent.forecast.runtime import load_runtime

    bundle = read_bundle(path)
    m = bundle.manifest
    interp = load_runtime(None).interpreter(bundle.model, 1)
    if m.batch > 1:
        runner = interp.get_signature_runner("forecast_batch")
        name = next(iter(runner.get_input_details()))
        xb = np.zeros((m.batch, m.window, len(m.features)), dtype=np.float32)

        def call() -> None:
            runner(**{name: xb})

    else:
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
        x = np.zeros(inp["shape"], dtype=inp["dtype"])

        def call() -> None:
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            interp.get_tensor(outp["index"])

    call()
    rounds = []
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            call()
        rounds.append((time.process_time() - t0) / n * 1e6)
    per_call = float(np.median(rounds))
    return {"batch": m.batch, "cpu_us_call": per_call, "cpu_us_window": per_call / m.batch}


def _config(path: Path, port: int, bundle: Path, streams: int, device: str) -> Path:
    state = path.parent / f"state-{device}"
    body = "".join(
        f'[[streams]]\nname = "s{i}"\nmodel = "{bundle}"\ninput_topic = "many/{device}/{i}"\n'
        f"close_delay_s = {CLOSE_DELAY * PERIOD_S}\nmax_gap_s = {10 * PERIOD_S}\n"
        for i in range(streams)
    )
    path.write_text(
        f'[device]\nid = "{device}"\n[state]\ndir = "{state}"\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\n' + body
    )
    return path


class _Feed:
    """One JSON reading per stream per period, from this process (paho, QoS 0)."""

    def __init__(self, port: int, topics: list[str], features: int) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.topics = topics
        self.names = "abc"[:features]
        self.rng = np.random.default_rng(5)

    def period(self, slot: int) -> None:
        """Every stream's reading of period ``slot`` (its middle)."""
        ts = (slot + 0.5) * PERIOD_S
        vals = self.rng.normal(0, 0.5, (len(self.topics), len(self.names)))
        for topic, row in zip(self.topics, vals):
            body = ",".join(f'"{f}":{v:.3f}' for f, v in zip(self.names, row))
            self.client.publish(topic, f'{{"ts":{ts:.3f},{body}}}'.encode())

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.2))


@contextlib.contextmanager
def _running(
    port: int, tree: Tree, cfg: Path, device: str, topics: list[str], features: int
) -> Iterator[tuple[subprocess.Popen[bytes], _Feed, list[tuple[float, bytes]]]]:
    """The agent on ``tree`` with ``cfg``, online; its feed, and the forecasts received."""
    client, got = subscriber(port, f"sensorcast/{device}/+/forecast")
    status, online = subscriber(port, f"sensorcast/{device}/status")
    log_path = cfg.with_suffix(".log")
    with log_path.open("wb") as log:
        proc = start_agent(tree, sys.executable, cfg, log=log)
        feed = _Feed(port, topics, features)
        try:
            if not wait_for(lambda: any(p == b"online" for _, p in online), 60):
                raise RuntimeError(f"the agent did not come online: see {log_path}")
            yield proc, feed, got
        finally:
            feed.close()
            proc.terminate()
            proc.wait(60)
            for c in (client, status):
                c.loop_stop()
                c.disconnect()


def measure_many(
    port: int,
    tree: Tree,
    bundle: Path,
    work: Path,
    streams: int,
    periods: int,
    tag: str,
    profile: Optional[Path] = None,
) -> dict[str, Any]:
    """The agent's CPU per forecast over ``periods`` live periods of ``streams`` streams.

    ``profile``: also record the agent with py-spy over the measured periods (raw stacks
    to that file)."""
    m = manifest(bundle)
    device = f"many-{tag}"
    cfg = _config(work / f"many-{tag}.toml", port, bundle, streams, device)
    topics = [f"many/{device}/{i}" for i in range(streams)]
    spy: Optional[subprocess.Popen[bytes]] = None
    with _running(port, tree, cfg, device, topics, len(m.features)) as (proc, feed, got):
        slot = int(time.time() // PERIOD_S)
        for k in range(slot - m.window - 2, slot):  # history: the windows fill at once
            feed.period(k)
        for k in range(slot, slot + 4):  # live warm-up
            _sleep_until((k + 0.5) * PERIOD_S)
            feed.period(k)
        first = slot + 4
        _sleep_until((first - 0.1) * PERIOD_S)
        if profile is not None:
            spy = record(proc.pid, profile, periods * PERIOD_S)
        cpu0, n0 = cpu_seconds(proc.pid), len(got)
        for k in range(first, first + periods):
            _sleep_until((k + 0.5) * PERIOD_S)
            feed.period(k)
        _sleep_until((first + periods - 0.1) * PERIOD_S)
        cpu_s, n = cpu_seconds(proc.pid) - cpu0, len(got) - n0
    if spy is not None:
        spy.wait(60)
    return _result(streams, n, streams * periods, cpu_s)


def _result(streams: int, got: int, expected: int, cpu_s: float) -> dict[str, Any]:
    return {"streams": streams, "forecasts": got, "forecasts_expected": expected,
            "cpu_s": cpu_s, "cpu_us_forecast": cpu_s / max(expected, 1) * 1e6}  # fmt: skip


def measure_paced(
    port: int,
    tree: Tree,
    bundle: Path,
    work: Path,
    n: int,
    tag: str,
    profile: Optional[Path] = None,
    rate: float = 400.0,
) -> dict[str, Any]:
    """One stream, replayed: a reading per period (past timestamps, ``rate`` a second) each
    closing the period before it, so each reading after the first ``window`` forecasts; the
    agent's CPU per forecast over ``n`` of them (``profile``: as :func:`measure_many`)."""
    m = manifest(bundle)
    device, topic = f"paced-{tag}", f"paced/{tag}"
    cfg = agent_config(work / f"paced-{tag}.toml", port, [("s0", bundle, topic)], device)
    with _running(port, tree, cfg, device, [topic], len(m.features)) as (proc, feed, got):
        start = int(time.time() // PERIOD_S) - n - m.window - 100
        for k in range(start, start + m.window + 1):
            feed.period(k)
        wait_for(lambda: len(got) >= 1, 30)
        time.sleep(0.5)
        spy = None if profile is None else record(proc.pid, profile, n / rate)
        cpu0, n0, t0 = cpu_seconds(proc.pid), len(got), time.time()
        for i in range(n):
            feed.period(start + m.window + 1 + i)
            _sleep_until(t0 + (i + 1) / rate)
        wait_for(lambda: len(got) - n0 >= n, 30)
        cpu_s, done = cpu_seconds(proc.pid) - cpu0, len(got) - n0
    if spy is not None:
        spy.wait(60)
    return _result(1, done, n, cpu_s)


def measure(run: Run) -> None:
    """Convert the bundles, time the bare invokes, then 100 streams and one on both trees."""
    keras = run.prep.get("lstm_keras")
    if not keras:
        run.r["many"] = {"error": "no LSTM model (prepare failed)"}
        return
    spec = {"do": "convert", "keras": keras, "work": str(run.work), "label": "many: convert"}
    bundles = dict(run.child("many", spec, timeout_s=600) or {})
    bundles.pop("seconds", None)  # the child's wall time, not a bundle
    if not bundles.get("batch") or not bundles.get("single"):
        run.r["many"] = {"error": "converting the bundles failed"}
        return
    spec = {**run.after.spec(), "do": "invoke", "bundles": bundles, "n": 20 if run.quick else 50}
    res: dict[str, Any] = {"bare": run.child("many", {**spec, "label": "many: bare"}) or {}}
    periods = 10 if run.quick else 30
    for side, tree in run.trees.items():
        res.setdefault(side, {})["batch"] = measure_many(
            run.port, tree, Path(bundles["batch"]), run.work, STREAMS, periods, f"{side}-batch"
        )
        res[side]["single"] = measure_paced(
            run.port, tree, Path(bundles["single"]), run.work, 40 * periods, f"{side}-single"
        )
    run.r["many"] = res


def _ratio(r: dict[str, Any], side: str, key: str) -> Optional[float]:
    got = ((r.get("many") or {}).get(side) or {}).get(key)
    bare = ((r.get("many") or {}).get("bare") or {}).get(key)
    if not got or not bare:
        return None
    return float(got["cpu_us_forecast"] / bare["cpu_us_window"])


def _cell(got: Optional[dict[str, Any]], x: Optional[float]) -> str:
    if not got or x is None:
        return "-"
    return (
        f"{got['cpu_us_forecast']:.1f} ({x:.2f}x; {got['forecasts']}/{got['forecasts_expected']})"
    )


HEAD = "before: agent CPU µs / forecast (ratio; received/expected)"


def render(r: dict[str, Any]) -> list[str]:
    """The section: CPU per forecast, before and after, against the bare invoke."""
    d = r.get("many") or {}
    if "error" in d:
        return ["## 100 streams, one model, same tick: whole path", "", d["error"], ""]
    rows = []
    for key, what in (("batch", f"{STREAMS} streams, batched"), ("single", "1 stream")):
        bare = (d.get("bare") or {}).get(key) or {}
        cells = [what, f"{bare.get('cpu_us_window', 0):.1f}"]
        for side in ("before", "after"):
            got = (d.get(side) or {}).get(key)
            cells.append(_cell(got, _ratio(r, side, key)))
        rows.append(cells)
    return [
        f"## 100 streams, one model, same tick: whole path ({PERIOD_S:g} s period)",
        "",
        INTRO,
        "",
        *table(["", "bare invoke CPU µs / window", HEAD, "after"], rows),
        "",
    ]


def targets(r: dict[str, Any]) -> list[tuple[str, str, Optional[bool]]]:
    """Target 3's row."""
    x = _ratio(r, "after", "batch")
    what = f"3. {STREAMS} streams, same tick: agent CPU per forecast <= {TARGET}x batched invoke"
    return [(what, "-" if x is None else f"{x:.2f}x", None if x is None else x <= TARGET)]


def main(argv: Optional[list[str]] = None) -> int:
    """Standalone: ``python -m bench.agent.many BATCH_BUNDLE [SINGLE_BUNDLE] [--periods N]
    [--profile] [--baseline REF]``; a Mosquitto of its own; prints JSON."""
    import argparse

    from bench.agent import trees
    from bench.harness.broker import Mosquitto

    p = argparse.ArgumentParser(prog="python -m bench.agent.many")
    p.add_argument("batch", type=Path)
    p.add_argument("single", type=Path, nargs="?")
    for flag, kind in (("--periods", int), ("--rounds", int), ("--baseline", str)):
        p.add_argument(flag, type=kind, default={"--periods": 20, "--rounds": 1}.get(flag))
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sensorcast-many-"))
    sides = {"after": trees.snapshot(work / "after")}
    if args.baseline:
        sides["before"] = trees.baseline(args.baseline, work / "before")
    broker = Mosquitto()
    broker.start()
    bare = {"batch": _bare_cpu(args.batch, 50)}
    if args.single is not None:
        bare["single"] = _bare_cpu(args.single, 2000)
    print("bare", json.dumps(bare), flush=True)
    try:
        for rnd in range(args.rounds):  # the sides take turns
            for side, tree in sides.items():
                tag = f"{side}{rnd}"
                spy = work / f"{tag}-batch.raw" if args.profile else None
                got = measure_many(
                    broker.port, tree, args.batch, work, STREAMS, args.periods, tag, spy
                )
                if spy is not None and spy.exists():
                    got["stages"] = stage_split(spy)
                print(side, "batch", json.dumps(got), flush=True)
                if args.single is not None:
                    n = 40 * args.periods
                    spy = work / f"{tag}-single.raw" if args.profile else None
                    got = measure_paced(broker.port, tree, args.single, work, n, tag, spy)
                    if spy is not None and spy.exists():
                        got["stages"] = stage_split(spy)
                    print(side, "single", json.dumps(got), flush=True)
    finally:
        broker.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
