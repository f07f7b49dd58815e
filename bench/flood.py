"""Flood: 100,000+ messages per second on the agent's input topic through a real Mosquitto.

C publishers (mosquitto_pub -l, as many as --publishers) replay valid readings as fast as the
broker takes them for --seconds. Reports the offered rate, what the agent accepted and shed,
what the broker dropped, the agent's RSS before, during and after, and whether forecasts kept
coming during the flood, to bench/RESULTS-flood.md.

    .venv/bin/python bench/flood.py                 # 20 s flood (about 1.5 min with setup)
    .venv/bin/python bench/flood.py --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as a file: the checkout, not bench/, first on sys.path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.agent.models import demo_bundle
from bench.harness.broker import Mosquitto
from bench.harness.paths import REPO
from bench.harness.proc import rss_mb

__all__ = ["main"]

PERIOD = 0.2  # forecasts every 0.2 s, so a flood of seconds shows whether they keep coming
LINES = 200_000  # per publisher round


@dataclass
class Watch:
    """What the watcher saw: forecast arrivals (monotonic s), their delays (s), broker drops."""

    times: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    dropped: int = 0

    def on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        """A forecast (or the broker's dropped-messages count)."""
        if msg.topic.startswith("$SYS"):
            self.dropped = int(msg.payload)
            return
        self.times.append(time.monotonic())
        end = json.loads(msg.payload)["window_end"]
        self.delays.append(time.time() - (end + 2 * PERIOD))  # its slot closed at end + period


def _watcher(port: int, watch: Watch) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.on_message = watch.on_message
    client.connect("127.0.0.1", port)
    client.subscribe(
        [("sensorcast/flood/room/forecast", 0), ("$SYS/broker/publish/messages/dropped", 0)]
    )
    client.loop_start()
    return client


def _setup(work: Path, port: int) -> tuple[Path, Path]:
    """The flood's lines and the agent's config."""
    bundle = demo_bundle(work / "room.tflite", PERIOD)
    # Readings without a timestamp: the agent stamps them on arrival, so the flood lands in
    # the current period, windows keep closing and forecasts keep being due.
    flood = work / "flood.txt"
    with flood.open("w") as f:
        for i in range(LINES):
            f.write(f'{{"temperature":{20 + (i % 7) * 0.1:.2f},"humidity":{55 + i % 3}.0}}\n')
    config = work / "agent.toml"
    config.write_text(
        f'[device]\nid = "flood"\n[state]\ndir = "{work / "state"}"\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\n'
        f'[[streams]]\nname = "room"\nmodel = "{bundle}"\ninput_topic = "flood/in"\n'
    )
    return flood, config


def _flood(port: int, flood: Path, seconds: float, publishers: int) -> tuple[int, float, float]:
    """Publish the lines over and over for ``seconds``: (sent, start, duration)."""
    sent = 0
    started = time.monotonic()
    while time.monotonic() < started + seconds:
        pubs = []
        for _ in range(publishers):
            with flood.open("rb") as lines:
                pubs.append(
                    subprocess.Popen(
                        ["mosquitto_pub", "-p", str(port), "-t", "flood/in", "-q", "0", "-l"],
                        stdin=lines,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        for p in pubs:
            p.wait()
        sent += LINES * publishers
    return sent, started, time.monotonic() - started


def _sample(pid: int, samples: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        samples.append(rss_mb(pid))
        time.sleep(0.25)


@dataclass
class Outcome:
    """The agent's side of a flood."""

    sent: int = 0
    flood_s: float = 0.0
    during: list[float] = field(default_factory=list)  #: forecast arrivals in the flood
    rss: tuple[float, float, float] = (0.0, 0.0, 0.0)  #: before, peak, after (MB)
    stderr: str = ""
    code: Optional[int] = None


def _run(args: argparse.Namespace, port: int, flood: Path, config: Path, watch: Watch) -> Outcome:
    agent = subprocess.Popen(
        [sys.executable, "-m", "sensorcast.agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3.0)
    out = Outcome()
    before, samples, stop = rss_mb(agent.pid), [0.0], threading.Event()
    sampler = threading.Thread(target=_sample, args=(agent.pid, samples, stop), daemon=True)
    sampler.start()
    out.sent, started, out.flood_s = _flood(port, flood, args.seconds, args.publishers)
    out.during = [t for t in watch.times if started <= t <= started + out.flood_s]
    time.sleep(3.0)  # the agent drains what it holds
    stop.set()
    sampler.join()
    out.rss = (before, max(samples), rss_mb(agent.pid))
    agent.terminate()
    _, out.stderr = agent.communicate(timeout=60)
    out.code = agent.returncode
    return out


def _lines(args: argparse.Namespace, out: Outcome, watch: Watch) -> list[str]:
    err = out.stderr
    accepted = int(re.findall(r"(\d+) readings accepted", err)[-1])
    made = int(re.findall(r"(\d+) forecasts \(", err)[-1])
    shed_found = re.findall(r"load shed: (\d+) reading batches", err)
    shed = int(shed_found[-1]) if shed_found else 0
    gaps = [b - a for a, b in zip(out.during, out.during[1:])]
    rate = out.sent / out.flood_s
    lines = [
        "# Flood results",
        "",
        f"Run by `bench/flood.py --seconds {args.seconds:g} --publishers {args.publishers}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()}; broker, publishers and "
        "agent share the machine.",
        "",
        f"- offered: {out.sent:,} messages in {out.flood_s:.1f} s = **{rate:,.0f} messages/s** "
        f"(valid readings of 2 features, QoS 0, {args.publishers} x mosquitto_pub -l)",
        f"- agent accepted {accepted // 2:,} messages ({accepted:,} readings) and shed "
        f"{shed:,} while its hand-over queue was full; the broker dropped {watch.dropped:,} it "
        "could not deliver to the agent fast enough (Mosquitto's own queue bound)",
        f"- forecasts during the flood: {len(out.during)} in {out.flood_s:.1f} s (one per "
        f"{PERIOD:g} s period is {out.flood_s / PERIOD:.0f}); longest gap between two: "
        f"{max(gaps) if gaps else float('nan'):.2f} s; the agent made {made} forecasts in all; "
        f"a forecast reached the subscriber {np.median(watch.delays):.2f} s (median) / "
        f"{max(watch.delays):.2f} s (max) after its window closed",
        f"- agent RSS: {out.rss[0]:.1f} MB before, peak {out.rss[1]:.1f} MB during, "
        f"{out.rss[2]:.1f} MB after",
        f"- agent exit code {out.code}",
        "",
    ]
    if out.code != 0:
        lines += ["agent log (tail):", "", "```", *err.splitlines()[-15:], "```", ""]
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    """Run the flood; exit status 1 if the rate stayed under 100,000/s, no forecast came
    during the flood, or the agent failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS-flood.md")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sensorcast-flood-"))
    broker = Mosquitto("listener {port} 127.0.0.1\nallow_anonymous true\nsys_interval 1\n")
    broker.start()
    watch = Watch()
    try:
        flood, config = _setup(work, broker.port)
        watcher = _watcher(broker.port, watch)
        out = _run(args, broker.port, flood, config, watch)
        watcher.loop_stop()
    finally:
        broker.close()
    lines = _lines(args, out, watch)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    ok = out.code == 0 and len(out.during) > 0 and out.sent / out.flood_s >= 100_000
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
