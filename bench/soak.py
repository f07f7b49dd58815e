"""Soak: many readings across 10 streams through a real Mosquitto, with broker outages.

Reports readings processed, forecasts published and received, forecasts lost (must be 0),
peak and final RSS of the agent, and the outbox high-water mark, to bench/RESULTS-soak.md.

    .venv/bin/python bench/soak.py                 # 1,000,000 readings (about 10 min here)
    .venv/bin/python bench/soak.py --readings 100000
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

STREAMS = 10
PER_SLOT = 10  # messages (of 2 readings) per period: the agent averages them
PERIOD = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--outages", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sensorcast-soak-"))
    bundle = demo_bundle(work / "room.tflite", PERIOD)
    store = work / "mosquitto"
    store.mkdir()
    broker = MosquittoBroker(
        MosquittoBroker.find() or "mosquitto",
        port=free_port(),
        conf=f"listener {{port}} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {store}/\nmax_queued_messages 0\n",
    )
    broker.start()
    streams = "".join(
        f'[[streams]]\nname = "s{i}"\nmodel = "{bundle}"\ninput_topic = "soak/in/{i}"\n'
        # replayed history: periods close on the next period's reading, not the clock
        "close_delay_s = 1000000000\nmax_future_s = 1000000000\n"
        for i in range(STREAMS)
    )
    config = work / "agent.toml"
    config.write_text(
        f'[device]\nid = "soak"\n[state]\ndir = "{work / "state"}"\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\nreconnect_min_s = 1\n'
        f"reconnect_max_s = 2\n[outbox]\nmax_messages = 1000000\nmax_bytes = 1000000000\n" + streams
    )

    received: set[str] = set()
    lock = threading.Lock()
    collector = paho.Client(CallbackAPIVersion.VERSION2, client_id="soak-collector",
                            clean_session=False)  # fmt: skip
    collector.on_connect = lambda c, *a: c.subscribe("sensorcast/soak/+/forecast", qos=1)

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        with lock:
            received.add(json.loads(msg.payload)["id"])

    collector.on_message = on_message
    collector.reconnect_delay_set(1, 1)
    collector.connect("127.0.0.1", broker.port)
    collector.loop_start()

    log = (work / "agent.log").open("w")
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    time.sleep(3)
    rss: list[float] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.is_set():
            rss.append(rss_mb(agent.pid))
            stop_sampling.wait(0.5)

    threading.Thread(target=sample, daemon=True).start()

    feeder = paho.Client(CallbackAPIVersion.VERSION2, client_id="soak-feeder")
    feeder.max_inflight_messages_set(1000)
    feeder.max_queued_messages_set(0)
    feeder.connect("127.0.0.1", broker.port)
    feeder.loop_start()
    messages = args.readings // 2
    per_stream = messages // STREAMS
    slots = per_stream // PER_SLOT
    rng = np.random.default_rng(1)
    temps = 21 + rng.normal(0, 0.5, per_stream)
    hums = 48 + rng.normal(0, 2, per_stream)
    start_ts = (np.floor(time.time() / PERIOD) - slots - 10) * PERIOD
    outage_at = {int(per_stream * (k + 1) / (args.outages + 1)) for k in range(args.outages)}
    began = time.monotonic()
    for j in range(per_stream):
        if j in outage_at:
            broker.stop()
            time.sleep(3)
            broker.start()
        ts = start_ts + (j // PER_SLOT) * PERIOD + (j % PER_SLOT) * PERIOD / PER_SLOT
        for i in range(STREAMS):
            payload = f'{{"ts":{ts:.3f},"temperature":{temps[j]:.3f},"humidity":{hums[j]:.2f}}}'
            feeder.publish(f"soak/in/{i}", payload, qos=1)
        if j % 200 == 0:
            while len(feeder._out_messages) > 20000:  # keep the feeder's own memory bounded
                time.sleep(0.01)
    while feeder.want_write() or len(feeder._out_messages):
        time.sleep(0.1)
    feed_s = time.monotonic() - began
    # wait until forecasts stop arriving (the agent has sent all it made)
    last, still = -1, 0.0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and still < 5.0:
        time.sleep(0.5)
        with lock:
            now_count = len(received)
        still = still + 0.5 if now_count == last else 0.0
        last = now_count
    agent.send_signal(signal.SIGTERM)
    agent.wait(60)
    stop_sampling.set()
    log.close()
    collector.loop_stop()
    feeder.loop_stop()
    broker.close()
    text = (work / "agent.log").read_text()
    final: dict[str, tuple[int, int]] = {}  # the last summary line of each stream
    for name, acc, fc in re.findall(
        r"stream (s\d+): (\d+) readings accepted.*?(\d+) forecasts \(", text
    ):
        final[name] = (int(acc), int(fc))
    accepted = sum(a for a, _ in final.values())
    forecasts = sum(f for _, f in final.values())
    high = re.findall(r"at most (\d+)\)", text)
    lost = forecasts - len(received)
    queued = re.findall(r"outbox: (\d+) queued", text)
    warm = [r for r in rss[4:]] or rss
    lines = [
        "# Soak results",
        "",
        f"Run by `bench/soak.py --readings {args.readings}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}.",
        "",
        f"- streams: {STREAMS}, {PER_SLOT} messages of 2 readings per {PERIOD:g} s period, "
        f"historical timestamps fed as fast as the broker takes them",
        f"- broker outages: {args.outages} x 3 s (Mosquitto stopped and restarted)",
        f"- feeding took {feed_s:.0f} s",
        f"- readings processed (accepted): {accepted:,} of {messages * 2:,} sent",
        f"- forecasts published: {forecasts:,}; received (unique ids): {len(received):,}; "
        f"**lost: {lost}**",
        f"- agent RSS: peak {max(rss):.1f} MB, after warm-up {warm[0]:.1f} MB, "
        f"final {rss[-1]:.1f} MB",
        f"- outbox high-water mark: {high[-1] if high else '?'} messages; "
        f"at exit {queued[-1] if queued else '?'} queued (0: the broker acknowledged every "
        "forecast the agent made, so any loss above happened between the broker and the "
        "soak's own subscriber)",
    ]
    (REPO / "bench" / "RESULTS-soak.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
