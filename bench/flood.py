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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
from _common import REPO, demo_bundle, rss_mb
from paho.mqtt.enums import CallbackAPIVersion

from agent.demo import MosquittoBroker, free_port

PERIOD = 0.2  # forecasts every 0.2 s, so a flood of seconds shows whether they keep coming
LINES = 200_000  # per publisher round


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--publishers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sensorcast-flood-"))
    bundle = demo_bundle(work / "room.tflite", PERIOD)
    broker = MosquittoBroker(
        MosquittoBroker.find() or "mosquitto",
        port=free_port(),
        conf="listener {port} 127.0.0.1\nallow_anonymous true\nsys_interval 1\n",
    )
    broker.start()
    port = broker.port
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

    forecast_times: list[float] = []
    delays: list[float] = []
    broker_dropped = [0]

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic.startswith("$SYS"):
            broker_dropped[0] = int(msg.payload)
        else:
            forecast_times.append(time.monotonic())
            end = json.loads(msg.payload)["window_end"]
            delays.append(time.time() - (end + 2 * PERIOD))  # its slot closed at end + period

    watcher = paho.Client(CallbackAPIVersion.VERSION2)
    watcher.on_message = on_message
    watcher.connect("127.0.0.1", port)
    watcher.subscribe([("sensorcast/flood/room/forecast", 0),
                       ("$SYS/broker/publish/messages/dropped", 0)])  # fmt: skip
    watcher.loop_start()

    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3.0)
    rss_before = rss_mb(agent.pid)
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_mb(agent.pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    sent = 0
    started = time.monotonic()
    deadline = started + args.seconds
    while time.monotonic() < deadline:
        pubs = [
            subprocess.Popen(
                ["mosquitto_pub", "-p", str(port), "-t", "flood/in", "-q", "0", "-l"],
                stdin=flood.open("rb"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(args.publishers)
        ]
        for p in pubs:
            p.wait()
        sent += LINES * args.publishers
    flood_s = time.monotonic() - started
    during = [t for t in forecast_times if started <= t <= started + flood_s]
    gaps = [b - a for a, b in zip(during, during[1:])]
    time.sleep(3.0)  # the agent drains what it holds
    stop.set()
    sampler.join()
    rss_after = rss_mb(agent.pid)
    agent.send_signal(signal.SIGTERM)
    _, stderr = agent.communicate(timeout=60)
    watcher.loop_stop()
    broker.close()

    accepted = int(re.findall(r"(\d+) readings accepted", stderr)[-1])
    made = int(re.findall(r"(\d+) forecasts \(", stderr)[-1])
    shed_found = re.findall(r"load shed: (\d+) reading batches", stderr)
    shed = int(shed_found[-1]) if shed_found else 0
    rate = sent / flood_s
    lines = [
        "# Flood results",
        "",
        f"Run by `bench/flood.py --seconds {args.seconds:g} --publishers {args.publishers}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()}; broker, publishers and "
        "agent share the machine.",
        "",
        f"- offered: {sent:,} messages in {flood_s:.1f} s = **{rate:,.0f} messages/s** "
        f"(valid readings of 2 features, QoS 0, {args.publishers} x mosquitto_pub -l)",
        f"- agent accepted {accepted // 2:,} messages ({accepted:,} readings) and shed "
        f"{shed:,} while its hand-over queue was full; the broker dropped {broker_dropped[0]:,} it "
        "could not deliver to the agent fast enough (Mosquitto's own queue bound)",
        f"- forecasts during the flood: {len(during)} in {flood_s:.1f} s (one per "
        f"{PERIOD:g} s period is {flood_s / PERIOD:.0f}); longest gap between two: "
        f"{max(gaps) if gaps else float('nan'):.2f} s; the agent made {made} forecasts in all; "
        f"a forecast reached the subscriber {np.median(delays):.2f} s (median) / "
        f"{max(delays):.2f} s (max) after its window closed",
        f"- agent RSS: {rss_before:.1f} MB before, peak {max(samples):.1f} MB during, "
        f"{rss_after:.1f} MB after",
        f"- agent exit code {agent.returncode}",
        "",
    ]
    if agent.returncode != 0:
        lines += ["agent log (tail):", "", "```", *stderr.splitlines()[-15:], "```", ""]
    (REPO / "bench" / "RESULTS-flood.md").write_text("\n".join(lines))
    print("\n".join(lines))
    ok = agent.returncode == 0 and len(during) > 0 and rate >= 100_000
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
