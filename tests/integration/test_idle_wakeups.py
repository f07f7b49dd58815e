"""An idle agent sleeps until something is due, yet closes a period on time.

The main loop waits for the next due event (a period close, a job, the heartbeat, the
keepalive) instead of a fixed 0.1 s tick (ten wakeups a second). Both checks run a real
agent against a real Mosquitto; the first counts the main thread's context switches
(``/proc/PID/task/PID/status``), the second checks a period still closes by the clock when
readings stop in the middle of it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.configs import agent_config, topic_stream
from tests.support.mqtt import Subscriber

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SPAN_S = 8.0  #: how long the idle agent's main thread is watched
MAX_PER_S = 2.0  #: context switches a second it may make (the 0.1 s tick made about 10)
PERIOD = 0.2  #: the fast bundle's period, seconds
CLOSE_DELAY_S = 0.05
#: How late after its due time the last period's forecast may arrive, seconds (the loop
#: wakes for it; left to the next periodic job, it could be up to 2 s late).
LATE_S = 0.5


def _switches(pid: int) -> int:
    """Voluntary and involuntary context switches of the process's main thread so far."""
    fields = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines()
    )
    return int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])


def _online(sub: Subscriber) -> Callable[[Any], bool]:
    return lambda _ms: b"online" in sub.payloads("/status")


def test_idle_agent_wakes_about_once_a_second_at_most(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    config = agent_config(
        tmp_path,
        device="idle",
        port=mosquitto.port,
        prefix=topic_prefix,
        streams=[topic_stream(demo_dir / "room.tflite", f"{topic_prefix}/in/room")],
    )
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/idle/status")
    with start_agent(config, stdin=subprocess.DEVNULL) as proc:
        try:
            assert sub.wait_for(_online(sub), timeout=30), "agent not online"
            time.sleep(1.0)  # start-up's turns are over
            before = _switches(proc.pid)
            time.sleep(SPAN_S)
            per_s = (_switches(proc.pid) - before) / SPAN_S
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert per_s < MAX_PER_S, f"main thread woke {per_s:.1f} times a second while idle"


def test_period_closes_on_time_when_readings_stop_mid_window(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    config = agent_config(
        tmp_path,
        device="live",
        port=mosquitto.port,
        prefix=topic_prefix,
        streams=[topic_stream(fast_bundle, f"{topic_prefix}/in/room", close_delay_s=CLOSE_DELAY_S)],
        quality={"anomaly": False},  # its dropout clock would wake the loop at the close too
    )
    status = subscriber_factory(mosquitto.port, f"{topic_prefix}/live/status")
    arrived: list[tuple[float, dict[str, Any]]] = []  # (wall-clock arrival, forecast)
    got = threading.Event()
    reader = paho.Client(CallbackAPIVersion.VERSION2)

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        arrived.append((time.time(), json.loads(msg.payload)))
        got.set()

    reader.on_message = on_message
    reader.connect("127.0.0.1", mosquitto.port)
    reader.subscribe(f"{topic_prefix}/live/room/forecast", qos=1)
    reader.loop_start()
    feeder = paho.Client(CallbackAPIVersion.VERSION2)
    feeder.connect("127.0.0.1", mosquitto.port)
    feeder.loop_start()
    with start_agent(config, stdin=subprocess.DEVNULL) as proc:
        try:
            assert status.wait_for(_online(status), timeout=30), "agent not online"
            # Live readings until forecasts flow, then silence in the middle of a period.
            deadline = time.monotonic() + 30
            last_ts = 0.0
            while time.monotonic() < deadline and not (got.is_set() and len(arrived) >= 2):
                last_ts = time.time()
                body = json.dumps({"ts": last_ts, "temperature": 21.5, "humidity": 47.5})
                feeder.publish(f"{topic_prefix}/in/room", body.encode(), qos=1).wait_for_publish(5)
                time.sleep(0.03)
            assert arrived, "no forecasts"
            slot = math.floor(last_ts / PERIOD + 1e-4)
            due = (slot + 1) * PERIOD + CLOSE_DELAY_S  # the last open period closes by the clock
            time.sleep(max(0.0, due - time.time()) + LATE_S + 0.5)
            last = [(t, f) for t, f in arrived if round(f["window_end"] / PERIOD) == slot]
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=20)
            for client in (feeder, reader):
                client.loop_stop()
                client.disconnect()
    assert proc.returncode == 0, stderr
    assert last, f"no forecast for the period the readings stopped in (slot {slot})"
    assert last[0][0] - due < LATE_S, f"its forecast came {last[0][0] - due:.2f} s after due"
