"""Soak: many readings across 10 streams through a real Mosquitto, with broker outages.

Reports readings processed, forecasts published and received, forecasts lost (must be 0),
peak and final RSS of the agent, and the outbox high-water mark, to bench/RESULTS-soak.md.

    .venv/bin/python bench/soak.py                 # 1,000,000 readings (about 10 min here)
    .venv/bin/python bench/soak.py --readings 100000
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Optional

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

STREAMS = 10
PER_SLOT = 10  # messages (of 2 readings) per period: the agent averages them
PERIOD = 1.0
#: Messages the feeder may have handed to paho and not yet seen acknowledged (its memory).
IN_FLIGHT = 20_000


def _config(work: Path, bundle: Path, port: int) -> Path:
    streams = "".join(
        f'[[streams]]\nname = "s{i}"\nmodel = "{bundle}"\ninput_topic = "soak/in/{i}"\n'
        # replayed history: periods close on the next period's reading, not the clock
        "close_delay_s = 1000000000\nmax_future_s = 1000000000\n"
        for i in range(STREAMS)
    )
    config = work / "agent.toml"
    config.write_text(
        f'[device]\nid = "soak"\n[state]\ndir = "{work / "state"}"\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\nreconnect_min_s = 1\n'
        f"reconnect_max_s = 2\n[outbox]\nmax_messages = 1000000\nmax_bytes = 1000000000\n" + streams
    )
    return config


def _collector(port: int, received: set[str]) -> paho.Client:
    """A persistent-session subscriber that keeps the ids of the forecasts it received."""
    lock = threading.Lock()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="soak-collector", clean_session=False
    )

    def on_connect(c: paho.Client, *_: object) -> None:
        c.subscribe("sensorcast/soak/+/forecast", qos=1)

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with lock:
            received.add(json.loads(msg.payload)["id"])

    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(1, 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _sampler(pid: int, rss: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        rss.append(rss_mb(pid))
        stop.wait(0.5)


def _drop_published(pending: collections.deque[paho.MQTTMessageInfo]) -> None:
    """Forget the oldest messages the broker acknowledged (QoS 1 acks come in order)."""
    while pending and pending[0].is_published():
        pending.popleft()


def _feed(port: int, readings: int, outages: int, broker: Mosquitto) -> float:
    """Publish the readings (QoS 1), stopping the broker ``outages`` times; seconds it took."""
    feeder = paho.Client(CallbackAPIVersion.VERSION2, client_id="soak-feeder")
    feeder.max_inflight_messages_set(1000)
    feeder.max_queued_messages_set(0)
    feeder.connect("127.0.0.1", port)
    feeder.loop_start()
    per_stream = readings // 2 // STREAMS
    rng = np.random.default_rng(1)
    temps, hums = 21 + rng.normal(0, 0.5, per_stream), 48 + rng.normal(0, 2, per_stream)
    start_ts = (np.floor(time.time() / PERIOD) - per_stream // PER_SLOT - 10) * PERIOD
    outage_at = {int(per_stream * (k + 1) / (outages + 1)) for k in range(outages)}
    pending: collections.deque[paho.MQTTMessageInfo] = collections.deque()
    began = time.monotonic()
    for j in range(per_stream):
        if j in outage_at:
            broker.stop()
            time.sleep(3)
            broker.start()
        ts = start_ts + (j // PER_SLOT) * PERIOD + (j % PER_SLOT) * PERIOD / PER_SLOT
        payload = f'{{"ts":{ts:.3f},"temperature":{temps[j]:.3f},"humidity":{hums[j]:.2f}}}'
        for i in range(STREAMS):
            pending.append(feeder.publish(f"soak/in/{i}", payload, qos=1))
        while len(pending) > IN_FLIGHT:  # keep the feeder's own memory bounded
            _drop_published(pending)
            time.sleep(0.01)
    while pending:
        _drop_published(pending)
        time.sleep(0.1)
    feed_s = time.monotonic() - began
    feeder.loop_stop()
    return feed_s


def _wait_quiet(received: set[str], quiet_s: float = 5.0, limit_s: float = 300) -> None:
    """Until no forecast arrived for ``quiet_s`` (the agent has sent all it made)."""
    last, still = -1, 0.0
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and still < quiet_s:
        time.sleep(0.5)
        count = len(received)
        still = still + 0.5 if count == last else 0.0
        last = count


def _report(
    args: argparse.Namespace, log: str, received: int, rss: list[float], feed_s: float
) -> tuple[list[str], int]:
    """The results file's lines, and the forecasts lost."""
    final: dict[str, tuple[int, int]] = {}  # the last summary line of each stream
    pattern = r"stream (s\d+): (\d+) readings accepted.*?(\d+) forecasts \("
    for name, acc, fc in re.findall(pattern, log):
        final[name] = (int(acc), int(fc))
    accepted = sum(a for a, _ in final.values())
    forecasts = sum(f for _, f in final.values())
    high, queued = re.findall(r"at most (\d+)\)", log), re.findall(r"outbox: (\d+) queued", log)
    lost = forecasts - received
    warm = rss[4:] or rss
    return [
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
        f"- readings processed (accepted): {accepted:,} of {args.readings // 2 * 2:,} sent",
        f"- forecasts published: {forecasts:,}; received (unique ids): {received:,}; "
        f"**lost: {lost}**",
        f"- agent RSS: peak {max(rss):.1f} MB, after warm-up {warm[0]:.1f} MB, "
        f"final {rss[-1]:.1f} MB",
        f"- outbox high-water mark: {high[-1] if high else '?'} messages; "
        f"at exit {queued[-1] if queued else '?'} queued (0: the broker acknowledged every "
        "forecast the agent made, so any loss above happened between the broker and the "
        "soak's own subscriber)",
    ], lost


def _agent(config: Path, log: IO[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sensorcast.agent", "run", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _run(
    args: argparse.Namespace, work: Path, broker: Mosquitto
) -> tuple[str, int, list[float], float]:
    """The agent under the feed: its log, forecasts received, RSS samples, feeding seconds."""
    received: set[str] = set()
    collector = _collector(broker.port, received)
    bundle = demo_bundle(work / "room.tflite", PERIOD)
    rss: list[float] = []
    done = threading.Event()
    with (work / "agent.log").open("w") as log:
        agent = _agent(_config(work, bundle, broker.port), log)
        time.sleep(3)
        threading.Thread(target=_sampler, args=(agent.pid, rss, done), daemon=True).start()
        feed_s = _feed(broker.port, args.readings, args.outages, broker)
        _wait_quiet(received)
        agent.terminate()
        agent.wait(60)
        done.set()
    collector.loop_stop()
    return (work / "agent.log").read_text(), len(received), rss, feed_s


def main(argv: Optional[list[str]] = None) -> int:
    """Run the soak; exit status 1 if a forecast was lost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--outages", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS-soak.md")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sensorcast-soak-"))
    store = work / "mosquitto"
    store.mkdir()
    broker = Mosquitto(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {store}/\nmax_queued_messages 0\n"
    )
    broker.start()
    try:
        log, received, rss, feed_s = _run(args, work, broker)
    finally:
        broker.close()
    lines, lost = _report(args, log, received, rss, feed_s)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
