"""A state directory that cannot be written, or a disk that fills up: a clear error line, and
forecasts keep coming; once the disk has room again, durability comes back."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker, run_mosquitto
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.host import fill_disk
from tests.support.mqtt import Subscriber

PERIOD = 0.2
#: The forecasts in an outbox database (its anomaly messages, issue 16, left out).
FORECASTS = "SELECT {} FROM outbox WHERE topic LIKE '%/forecast'"


def test_unwritable_state_directory_degrades_durability_not_forecasting(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory should be\n")  # even root cannot
    config = agent_config(
        tmp_path,
        device="ro",
        port=mosquitto.port,
        prefix=topic_prefix,
        state={"dir": blocker / "state"},
        streams=[stdin_stream(fast_bundle)],
    )
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:27, 1:]
    lines = "".join(json_lines(rows, 1_700_000_000, PERIOD))
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/ro/room/forecast")
    with start_agent(config) as proc:
        assert proc.stdin is not None
        proc.stdin.write(lines)
        proc.stdin.flush()
        try:
            assert sub.wait_for(lambda ms: len(ms) >= 4, 20)
            time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    errors = [ln for ln in stderr.splitlines() if "durability is degraded" in ln]
    assert errors and "ERROR" in errors[0] and str(blocker) in errors[0]
    assert "durability degraded" in stderr  # and the summary says so too
    assert len(sub.payloads("/forecast")) == 4


def test_a_full_disk_degrades_durability_not_forecasting(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    tiny_disk: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    """A real filesystem fills up under the running agent (its outbox, snapshots and health
    file): one clear ERROR, every forecast still reaches the broker, a clean exit."""
    config = agent_config(
        tmp_path,
        device="full",
        port=mosquitto.port,
        prefix=topic_prefix,
        state={"dir": tiny_disk / "state"},
        streams=[stdin_stream(fast_bundle)],
    )
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:330, 1:]
    lines = json_lines(rows, 1_700_000_000, PERIOD)
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/full/room/forecast")
    with start_agent(config) as proc:
        assert proc.stdin is not None
        try:
            proc.stdin.write("".join(lines[:30]))
            proc.stdin.flush()
            assert sub.wait_for(lambda ms: len(ms) >= 6, 20)
            fill_disk(tiny_disk)
            for line in lines[30:]:
                proc.stdin.write(line)
                proc.stdin.flush()
                time.sleep(0.005)
            expected = len(rows) - 23  # a forecast per window (the last closed by the clock)
            assert sub.wait_for(lambda ms: len(ms) >= expected, 30), len(sub.payloads("/"))
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    errors = [ln for ln in stderr.splitlines() if "durability is degraded" in ln]
    assert len(errors) == 1 and "ERROR" in errors[0] and "full" in errors[0], errors
    assert "durability degraded" in stderr  # the summary says so too
    ids = [json.loads(p)["id"] for p in sub.payloads("/forecast")]
    assert len(set(ids)) == expected
    assert ids == sorted(ids, key=lambda i: int(i.split("/")[-1]))


@pytest.fixture
def own_broker() -> Iterator[MosquittoBroker]:
    """A broker of its own: the test stops it."""
    yield from run_mosquitto()


@pytest.mark.timeout(150)
def test_durability_comes_back_when_the_disk_has_room_again(
    own_broker: MosquittoBroker,
    fast_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
    tiny_disk: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    """The disk fills while the broker is away, so forecasts queue in memory; then room comes
    back: the agent says durability is restored and its backlog is on disk, in order. Killed
    with -9 after that, it has lost nothing: what the broker did not get is in the outbox."""
    broker = own_broker
    config = agent_config(
        tmp_path,
        device="back",
        port=broker.port,
        mqtt={"reconnect_min_s": 1, "reconnect_max_s": 2},
        state={"dir": tiny_disk / "state"},
        streams=[stdin_stream(fast_bundle)],
    )
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:80, 1:]
    start = 1_700_030_000.0
    lines = json_lines(rows, start, PERIOD)
    sub = subscriber_factory(broker.port, "sensorcast/back/room/forecast")
    log: list[str] = []
    proc = start_agent(config)
    assert proc.stdin is not None and proc.stderr is not None
    stderr = proc.stderr
    reader = threading.Thread(target=lambda: log.extend(iter(stderr.readline, "")))
    reader.start()

    def logged(text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in list(log)):
                return True
            time.sleep(0.1)
        return False

    try:
        proc.stdin.write("".join(lines[:30]))
        proc.stdin.flush()
        # All 7 forecasts of these readings (the last closed by the clock) before the broker
        # stops: one it acknowledged but had not yet passed on when it stopped would be lost
        # by the broker, not by the agent (the likely cause of one lost under load in CI:
        # neither queued nor received; the agent's log was not kept then, it is now).
        assert sub.wait_for(lambda ms: len(ms) >= 7, 20), len(sub.payloads("/"))
        broker.stop()  # from now on forecasts wait in the outbox
        fill_disk(tiny_disk)
        for line in lines[30:60]:
            proc.stdin.write(line)
            proc.stdin.flush()
            time.sleep(0.01)
        assert logged("durability is degraded", 20), "".join(log)
        (tiny_disk / "filler").unlink()
        assert logged("durability restored", 60), "".join(log)  # retried after 30 s
        proc.stdin.write("".join(lines[60:]))  # these go to disk straight away
        proc.stdin.flush()
        time.sleep(2.0)  # every window closed (the last by the clock) and committed
    finally:
        proc.kill()
        proc.wait(10)
        reader.join(10)
        proc.stdin.close()
        stderr.close()
    with sqlite3.connect(tiny_disk / "state" / "outbox-back.db") as db:
        queued = [json.loads(p)["id"] for (p,) in db.execute(FORECASTS.format("payload"))]
        ordered = [row[0] for row in db.execute(FORECASTS.format("id"))]
    expected = [f"back/room/{round((start + k * PERIOD) * 1000)}" for k in range(23, len(rows))]
    received = {json.loads(p)["id"] for p in sub.payloads("/forecast")}
    lost = sorted(set(expected) - set(queued) - received)
    assert set(queued) | received == set(expected), (lost, "".join(log[-40:]))
    assert queued == [i for i in expected if i in set(queued)]  # in order
    assert ordered == sorted(ordered)
    assert len(queued) >= len(rows) - 60, queued  # the backlog and what came after
    assert "Traceback" not in "".join(log)
