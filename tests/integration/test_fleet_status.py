"""``sensorcast fleet status`` against real agents on a real Mosquitto: three agents publish
their retained state (one behind site ``site-a``), one is stopped cleanly, the site's bridge
is reported down; the table and the JSON document say who is online, offline, unreachable,
with each stream's model and quality, from a separate controller process."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sensorcast.agent import __version__
from sensorcast.agent.fleet.client import Connection, FleetClient
from sensorcast.agent.fleet.status import table
from sensorcast.agent.publish.topics import FleetTopics

from tests.support.agents import run_cli, start_agent
from tests.support.brokers import MosquittoBroker, run_mosquitto
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.mqtt import Subscriber

PERIOD = 0.2
ROWS = 60  # a 24-step window: 37 forecasts, and actuals for the first ones' 12 steps
DEVICES = {"fa": "site-a", "fb": None, "fc": None}


def _metrics(sub: Subscriber, device: str) -> list[dict[str, Any]]:
    return [json.loads(p) for p in sub.payloads(f"/{device}/metrics")]


def _reported(sub: Subscriber, device: str) -> bool:
    """The device's metrics name a forecast and its quality report went out."""
    done = any(m["streams"]["room"]["last_forecast"] for m in _metrics(sub, device))
    return done and bool(sub.payloads(f"/{device}/room/quality"))


@pytest.fixture
def agents(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    demo_dir: Path,
    tmp_path: Path,
) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Three running agents, each fed 60 readings ending now."""
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:ROWS, 1:]
    lines = json_lines(rows, time.time() - ROWS * PERIOD, PERIOD)
    procs: dict[str, subprocess.Popen[str]] = {}
    with ExitStack() as stack:
        for device, site in DEVICES.items():
            home = tmp_path / device
            home.mkdir()
            config = agent_config(
                home, device=device, port=mosquitto.port, prefix=topic_prefix,
                homeassistant={"enabled": False}, streams=[stdin_stream(fast_bundle)],
                metrics={"interval_s": 1}, quality={"interval_s": 1, "min_samples": 2},
                state={"dir": str(home / "state")},
            )  # fmt: skip
            if site:  # [device] site beside the id agent_config writes
                text = config.read_text().replace("[device]\n", f'[device]\nsite = "{site}"\n')
                config.write_text(text)
            log = stack.enter_context((home / "agent.log").open("w"))
            proc = procs[device] = stack.enter_context(start_agent(config, stderr=log))
            stack.callback(_stop, proc)
            assert proc.stdin is not None
            proc.stdin.write("".join(lines))
            proc.stdin.flush()
        yield procs


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_fleet_status_shows_every_device_and_its_state(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    agents: dict[str, subprocess.Popen[str]],
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/#")
    assert sub.wait_for(lambda _: all(_reported(sub, d) for d in DEVICES), 60), sub.messages[-5:]
    _stop(agents["fc"])  # cleanly: its retained status says offline
    assert agents["fc"].returncode == 0
    assert sub.wait_for(lambda _: b"offline" in sub.payloads("/fc/status"), 10)
    # the central broker's view of site-a's bridge: down (Mosquitto's notification, retained)
    sub.client.publish(FleetTopics(topic_prefix).bridge("site-a"), b"0", qos=1, retain=True)
    # a device that said it is online but nothing else yet: listed, with no stream
    sub.client.publish(f"{topic_prefix}/fd/status", b"online", qos=1, retain=True)
    # a broken device's metrics: counted, the others still shown
    sub.client.publish(f"{topic_prefix}/fe/metrics", b"{not json", qos=1, retain=True)
    assert sub.wait_for(lambda _: bool(sub.payloads("/fe/metrics")), 10)
    flags = ("--url", f"mqtt://127.0.0.1:{mosquitto.port}", "--topic-prefix", topic_prefix)

    done = run_cli("fleet", "status", *flags, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[1:] if line}
    label = json.loads(sub.payloads("/fa/metrics")[-1])["streams"]["room"]["model"]
    assert rows["fa"][:6] == ["fa", "site-a", "unreachable", __version__, "room", label]
    assert rows["fb"][:6] == ["fb", "-", "online", __version__, "room", label]
    assert rows["fc"][2] == "offline"
    assert rows["fd"][:5] == ["fd", "-", "online", "-", "-"]
    assert "s ago" in done.stdout  # the forecasts were made a few seconds ago
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("4 devices: 2 online, 1 offline, 1 unreachable"), done.stdout
    assert "sites with bridge down: site-a" in summary
    assert "1 malformed message ignored" in summary

    done = run_cli("fleet", "status", "--json", *flags, timeout=60)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["summary"] == {
        "devices": 4, "online": 2, "offline": 1, "unreachable": 1, "unknown": 0,
        "bridges_down": ["site-a"], "errors": 1, "complete": True,
    }  # fmt: skip
    assert doc["bridges"] == {"site-a": False}
    devices = {d["id"]: d for d in doc["devices"]}
    assert [devices[d]["state"] for d in ("fa", "fb", "fc", "fd")] == [
        "unreachable", "online", "offline", "online",
    ]  # fmt: skip
    assert devices["fd"]["streams"] == [] and devices["fd"]["version"] is None
    room = devices["fb"]["streams"][0]
    assert room["name"] == "room" and room["model"] == label and room["shadow"] is None
    assert 0 <= room["last_forecast_age_s"] < 120
    assert set(room["skill"]) >= {"last_value"} and room["quality_time"] is not None
    assert not room["drift"] and not room["fallback"]
    assert devices["fa"]["site"] == "site-a" and devices["fa"]["started"] <= doc["time"]


def test_fleet_status_says_when_the_broker_cannot_be_reached() -> None:
    from sensorcast.agent.demo.brokers import free_port

    done = run_cli("fleet", "status", "--url", f"mqtt://127.0.0.1:{free_port()}", timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("sensorcast fleet: error: cannot reach MQTT broker 127.0.0.1:")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def _retain_statuses(port: int, prefix: str, count: int) -> None:
    """``count`` devices' retained ``online``, each acked by the broker."""
    loader = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"load-{prefix}")
    loader.connect("127.0.0.1", port)
    loader.loop_start()
    try:
        sent = [
            loader.publish(f"{prefix}/d{i:03d}/status", b"online", qos=1, retain=True)
            for i in range(count)
        ]
        for info in sent:
            info.wait_for_publish(10)
    finally:
        loader.disconnect()
        loader.loop_stop()


def test_the_client_reads_waits_and_publishes(
    mosquitto: MosquittoBroker, topic_prefix: str
) -> None:
    _retain_statuses(mosquitto.port, topic_prefix, 30)
    conn = Connection(urls=(f"mqtt://127.0.0.1:{mosquitto.port}",), prefix=topic_prefix)
    seen: list[tuple[str, bytes]] = []
    with FleetClient(conn) as client:
        client.connect()
        client.on_message(lambda topic, payload: seen.append((topic, payload)))
        client.watch()
        fleet = client.settle()
        assert len(fleet.devices) == 30 and fleet.complete
        state = f"{topic_prefix}/d007/model/state"
        client.publish(state, b'{"status": "applied", "stream": "room"}', retain=True)
        assert client.wait(lambda f: f.devices["d007"].model_state is not None, 10)
        assert fleet.devices["d007"].model_state is None  # a copy: it did not move
        assert (state, b'{"status": "applied", "stream": "room"}') in seen
        client.publish(state, b"", retain=True)  # cleared
        assert client.wait(lambda f: f.devices["d007"].model_state is None, 10)


def test_a_broker_that_drops_retained_messages_is_told(topic_prefix: str) -> None:
    """Mosquitto queues at most max_queued_messages for a client beyond the ones in flight
    and drops the rest silently: the view says it is incomplete."""
    conf = (
        "listener {port} 127.0.0.1\nallow_anonymous true\n"
        "max_inflight_messages 1\nmax_queued_messages 5\n"
    )
    for broker in run_mosquitto(conf):
        _retain_statuses(broker.port, topic_prefix, 30)
        conn = Connection(urls=(f"mqtt://127.0.0.1:{broker.port}",), prefix=topic_prefix)
        with FleetClient(conn) as client:
            client.connect()
            client.watch(quiet_s=0.5)
            fleet = client.settle()
        assert not fleet.complete and len(fleet.devices) < 30
        assert "INCOMPLETE" in table(fleet).splitlines()[-1]


def test_a_controller_the_acl_keeps_from_its_marker_still_reads_all(
    topic_prefix: str, tmp_path: Path
) -> None:
    """The marker is not echoed (publishing it is denied; MQTT 3.1.1 cannot say so): the
    client falls back to waiting for a quiet spell, and still reads every device."""
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite {topic_prefix}/#\nuser ctl\ntopic read {topic_prefix}/#\n")
    acl.chmod(0o644)
    conf = f"listener {{port}} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n"
    for broker in run_mosquitto(conf):
        _retain_statuses(broker.port, topic_prefix, 30)
        conn = Connection(
            urls=(f"mqtt://127.0.0.1:{broker.port}",), prefix=topic_prefix, username="ctl"
        )
        with FleetClient(conn) as client:
            client.connect()
            client.watch(quiet_s=0.5)
            fleet = client.settle(quiet_s=0.5)
        assert len(fleet.devices) == 30 and fleet.complete


def test_the_client_reads_again_after_the_broker_restarts(topic_prefix: str) -> None:
    """A clean session loses its subscriptions with the connection: the client renews them
    on reconnecting, and the broker's retained state (its own, persisted or re-sent by the
    devices) reaches the view again."""
    for broker in run_mosquitto():
        conn = Connection(urls=(f"mqtt://127.0.0.1:{broker.port}",), prefix=topic_prefix)
        with FleetClient(conn) as client:
            client.connect()
            client.watch()
            assert client.settle().devices == {}
            broker.stop()
            broker.start()
            _retain_statuses(broker.port, topic_prefix, 3)
            assert client.wait(lambda f: len(f.devices) == 3, 30)
            client.publish(f"{topic_prefix}/d001/status", b"offline", retain=True)
            assert client.wait(lambda f: f.devices["d001"].status == "offline", 10)
