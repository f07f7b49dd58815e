"""Model updates are safe with the config a device ships with, tried as an attacker on the
broker would: a real Mosquitto, real agents, real HTTP servers on 127.0.0.1.

Closed by default; no replay of an older bundle; no local files, no plain http for unsigned
bundles, no digest of bytes that did not match; no URL password in any message; a deadline
for the whole download; and a bundle that passes every check but fails in use is rolled back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sensorcast.agent.forecast.manifest import read_bundle

from tests.support.agents import run_cli, start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.configs import agent_config, topic_stream
from tests.support.host import missing_tool
from tests.support.mqtt import Subscriber
from tests.support.paths import REPO
from tests.support.updates import (
    DEMO,
    NEWER,
    answer,
    http_server,
    request,
    undated,
    write_key,
)

SECRET = "s3cret-Pa55"


class Device:
    """A running agent with one stream ``room`` whose model is a writable copy of ``model``,
    and a client that speaks to it over the broker."""

    def __init__(
        self, tmp_path: Path, port: int, prefix: str, updates: dict[str, Any],
        model: Path = DEMO, **tables: Any,
    ) -> None:  # fmt: skip
        self.dir, self.port, self.prefix = tmp_path, port, prefix
        (tmp_path / "models").mkdir(exist_ok=True)
        self.model = tmp_path / "models" / "room.tflite"
        self.model.write_bytes(model.read_bytes())
        self.config = agent_config(
            tmp_path,
            device="dev",
            port=port,
            prefix=prefix,
            homeassistant={"enabled": False},
            **tables,
            updates=updates,
            streams=[topic_stream("models/room.tflite", f"{prefix}/in/room", max_gap_s=100000000)],
        )
        self.sub = Subscriber(port, f"{prefix}/#")
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.proc = start_agent(self.config)
        self.stderr = ""
        assert self.sub.wait_for(lambda ms: any(p == b"online" for _, p, _ in ms), 30)

    def states(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.sub.payloads("/model/state") if p]

    def send(self, body: dict[str, Any], topic: str = "dev/model/set") -> None:
        info = self.client.publish(f"{self.prefix}/{topic}", json.dumps(body), qos=1)
        info.wait_for_publish(10)

    def ask(self, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        """Send a request, wait for the next state message, return it."""
        n = len(self.states())
        self.send(body)
        assert self.sub.wait_for(lambda _: len(self.states()) > n, timeout), "no model/state"
        return self.states()[n]

    def reading(self, ts: float, temperature: float, humidity: float) -> None:
        body = {"ts": ts, "temperature": temperature, "humidity": humidity}
        self.client.publish(f"{self.prefix}/in/room", json.dumps(body), qos=1).wait_for_publish(10)

    def forecasts(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.sub.payloads("/room/forecast")]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, self.stderr = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.stderr = self.proc.communicate()
        self.client.loop_stop()
        self.client.disconnect()
        self.sub.close()
        return self.proc.returncode


@pytest.fixture
def device(
    tmp_path: Path, mosquitto: MosquittoBroker, topic_prefix: str
) -> Iterator[Callable[..., Device]]:
    made: list[Device] = []

    def make(
        updates: dict[str, Any] | None = None, model: Path = DEMO, **tables: dict[str, Any]
    ) -> Device:
        """An agent whose [updates] table is ``updates``, with more ``tables`` if given."""
        d = tmp_path / f"dev{len(made)}"
        d.mkdir()
        prefix = f"{topic_prefix}{len(made)}"
        dev = Device(d, mosquitto.port, prefix, updates or {}, model, **tables)
        made.append(dev)
        return dev

    yield make
    for dev in made:
        if dev.proc.returncode is None:
            dev.stop()


def test_updates_are_closed_by_default(device: Callable[..., Device]) -> None:
    dev = device()  # the shipped defaults: [updates] says nothing
    for topic in ("dev/model/set", "fleet/model/set"):
        n = len(dev.states())
        dev.send(request(NEWER.read_bytes()), topic)
        assert dev.sub.wait_for(lambda _, n=n: len(dev.states()) > n, 30)  # type: ignore[misc]
        state = dev.states()[-1]
        assert state["status"] == "rejected" and state["stream"] == "room", state
        assert "updates.public_key" in state["reason"], state
        assert "updates.allow_unsigned = true" in state["reason"], state
    assert dev.model.read_bytes() == DEMO.read_bytes()
    assert dev.stop() == 0
    assert "model update refused: model updates are closed" in dev.stderr, dev.stderr
    assert "model updates are closed: requests on" in dev.stderr  # said at start, once


def test_allow_unsigned_is_flagged_by_check_and_at_start(device: Callable[..., Device]) -> None:
    dev = device({"allow_unsigned": True})
    assert dev.ask(request(NEWER.read_bytes()))["status"] == "applied"
    assert dev.stop() == 0
    assert re.search(
        r"WARNING sensorcast\.agent\.service: updates\.allow_unsigned = true", dev.stderr
    )
    done = run_cli("check", "--config", str(dev.config))
    assert done.returncode == 0, done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if "WARNING" in ln]
    assert "updates.allow_unsigned = true" in line and "updates.public_key" in line


def test_an_older_bundle_is_refused_even_signed(
    device: Callable[..., Device], tmp_path: Path
) -> None:
    sign = write_key(tmp_path)
    dev = device({"public_key": tmp_path / "update.pub"}, model=NEWER)
    older, odd = DEMO.read_bytes(), undated(NEWER.read_bytes())
    for body in (request(older, signature=sign(older)),
                 request(older, signature=sign(older), allow_downgrade=True),
                 request(odd, signature=sign(odd))):  # fmt: skip
        state = dev.ask(body)
        assert state["status"] == "rejected", state
        assert "updates.allow_downgrade = true" in state["reason"], state
    assert dev.model.read_bytes() == NEWER.read_bytes()
    assert dev.stop() == 0
    # The device's own config may allow it.
    again = device({"public_key": tmp_path / "update.pub", "allow_downgrade": True}, NEWER)
    assert again.ask(request(older, signature=sign(older)))["status"] == "applied"
    assert again.model.read_bytes() == older


def test_no_local_files_no_plain_http_unsigned_no_digest_of_what_did_not_match(
    device: Callable[..., Device], tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2\n")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    dev = device({"allow_unsigned": True})
    reasons = []
    for path in (secret, tmp_path / "missing"):
        state = dev.ask(request(b"", url=f"file://{path}", sha256=digest))
        assert state["status"] == "rejected" and "only https" in state["reason"], state
        assert digest[:8] not in state["reason"]
        reasons.append(state["reason"].replace(str(path), "PATH"))
    assert reasons[0] == reasons[1]  # whether the file exists is not told either
    data = NEWER.read_bytes()
    with http_server(answer(data)) as server:
        state = dev.ask(request(data, url=server.url()))
        assert state["status"] == "rejected" and "plain http" in state["reason"], state
        assert server.requests == []  # refused before anything was opened
    state = dev.ask({**request(data), "sha256": "0" * 64})
    assert state["reason"].startswith("digest mismatch"), state
    assert hashlib.sha256(data).hexdigest()[:8] not in json.dumps(state)
    assert dev.model.read_bytes() == DEMO.read_bytes()
    assert dev.stop() == 0
    assert digest[:8] not in dev.stderr and hashlib.sha256(data).hexdigest()[:8] not in dev.stderr


def test_a_url_password_is_never_printed(device: Callable[..., Device], tmp_path: Path) -> None:
    sign = write_key(tmp_path)
    dev = device({"public_key": tmp_path / "update.pub"})
    data = NEWER.read_bytes()
    with http_server(answer(b"no such bundle", status=404)) as server:
        for url in (server.url(userinfo=f"updater:{SECRET}"),
                    f"http://updater:{SECRET}@127.0.0.1:notaport/room.tflite"):  # fmt: skip
            state = dev.ask(request(data, url=url, signature=sign(data)))
            assert state["status"] == "rejected", state
            assert SECRET not in json.dumps(state) and "updater:***@" in state["reason"], state

    # The right password, as Basic auth: the update goes through.
    def guarded(h: http.server.BaseHTTPRequestHandler) -> None:
        if "Authorization" in h.headers:
            answer(data)(h)
        else:
            answer(b"", status=401)(h)

    with http_server(guarded) as server:
        url = server.url(userinfo=f"updater:{SECRET}")
        assert dev.ask(request(data, url=url, signature=sign(data)))["status"] == "applied"
    assert dev.stop() == 0
    assert SECRET not in dev.stderr, dev.stderr


def test_timeout_s_is_a_deadline_for_the_whole_download(
    device: Callable[..., Device], tmp_path: Path
) -> None:
    """A server trickling a byte every 0.5 s (each read well within timeout_s) is left at
    timeout_s = 2, and the update queued behind it is applied; before, the worker was held
    for the whole 200 s of the trickle."""
    sign = write_key(tmp_path)
    dev = device({"public_key": tmp_path / "update.pub", "timeout_s": 2})
    data = NEWER.read_bytes()

    def trickle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "400")
        h.end_headers()
        for _ in range(400):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.5)

    with http_server(trickle) as server:
        n = len(dev.states())
        dev.send(request(data, url=server.url(), signature=sign(data)))
        dev.send(request(data, signature=sign(data)))  # queued behind the slow one
        assert dev.sub.wait_for(lambda _: len(dev.states()) >= n + 2, 30), dev.states()
        slow, queued = dev.states()[n : n + 2]
        assert slow["status"] == "rejected" and "deadline" in slow["reason"], slow
        assert "updates.timeout_s (2 s)" in slow["reason"], slow
        assert queued["status"] == "applied", queued
        assert server.gone.wait(30), "the abandoned download's connection was not closed"
    assert dev.model.read_bytes() == data
    assert dev.stop() == 0


# -- a bundle that passes every check and fails in use -------------------------------------


@pytest.fixture(scope="module")
def fails_in_use(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle that passes everything the agent checks before running a model (the
    demo's manifest, shapes, dtypes, an interpreter that loads it) but fails on real
    readings: its graph gathers from an 8-entry table at an index computed from the input,
    out of bounds for any real temperature (the interpreter raises at invoke)."""
    try:
        import tensorflow as tf
    except ImportError:
        missing_tool("tensorflow is not installed (pip install -e '.[convert]')")
    from sensorcast.convert.bundle import embed_manifest

    table = tf.constant(np.arange(8, dtype=np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 24, 2], tf.float32)])
    def model(x: Any) -> Any:
        index = tf.cast(tf.abs(x[0, -12:, 0]) * 1000.0, tf.int32)
        return tf.reshape(tf.gather(table, index), [1, 12])

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.get_concrete_function()], model
    )
    manifest = dataclasses.replace(
        read_bundle(DEMO).manifest,
        created="2026-11-25T00:00:00Z",  # newer than the demo's
    )
    out = tmp_path_factory.mktemp("fails") / "room.tflite"
    out.write_bytes(embed_manifest(converter.convert(), manifest))
    return out


def _feed(dev: Device, start: int, count: int, base: float) -> None:
    rows = np.loadtxt(REPO / "examples" / "demo" / "room.csv", delimiter=",", skiprows=1)
    for i in range(start, start + count):
        _, t, h = rows[i % len(rows)]
        dev.reading(base + i * 300.0, float(t), float(h))


def test_an_update_that_fails_in_use_is_rolled_back(
    device: Callable[..., Device], fails_in_use: Path
) -> None:
    dev = device({"allow_unsigned": True})
    bad = fails_in_use.read_bytes()
    bad_sha = hashlib.sha256(bad).hexdigest()
    demo_label = f"room@{hashlib.sha256(DEMO.read_bytes()).hexdigest()[:12]}"
    state = dev.ask(request(bad))
    assert state["status"] == "applied", state  # every check before it runs passes
    base = time.time() - 200 * 300.0  # readings from the past: each period closes at once
    i = 0

    def rolled_back() -> bool:
        return any(s["status"] == "rolled_back" for s in dev.states())

    while not rolled_back() and i < 120:  # the window fills (24), then it forecasts
        _feed(dev, i, 5, base)
        i += 5
        dev.sub.wait_for(lambda _: rolled_back(), 0.5)
    assert dev.proc.poll() is None, "the agent died"
    state = next(s for s in dev.states() if s["status"] == "rolled_back")
    assert state["stream"] == "room" and state["sha256"] == bad_sha, state
    assert "gather index out of bounds" in state["reason"], state
    assert state["model"] == demo_label, state
    assert dev.model.read_bytes() == DEMO.read_bytes()  # .previous is back
    # It goes on forecasting with the model it had.
    n = len(dev.forecasts())
    _feed(dev, i, 5, base)
    assert dev.sub.wait_for(lambda _: len(dev.forecasts()) > n, 30)
    assert {f["model"] for f in dev.forecasts()[n:]} == {demo_label}
    # The same bundle again (a retained request, say) is not applied a second time.
    again = dev.ask(request(bad))
    assert again["status"] == "rejected" and "rolled back" in again["reason"], again
    assert dev.model.read_bytes() == DEMO.read_bytes()
    assert dev.stop() == 0
    assert "failed (forecast failed: RuntimeError: gather index out of bounds" in dev.stderr
    assert "rolled back to room.tflite.previous" in dev.stderr


def test_a_model_failing_in_use_is_counted_not_fatal(
    device: Callable[..., Device], fails_in_use: Path
) -> None:
    """Not from an update (a file copied in by hand): no .previous to go back to; the agent
    counts each lost forecast, logs at a limited rate, and keeps running."""
    dev = device(metrics={"interval_s": 1})
    dev.model.write_bytes(fails_in_use.read_bytes())
    dev.proc.send_signal(signal.SIGHUP)  # reload now
    time.sleep(1.0)
    _feed(dev, 0, 40, time.time() - 200 * 300.0)

    def errors() -> int:
        reports = [json.loads(p) for p in dev.sub.payloads("/metrics")]
        return max((r["streams"]["room"].get("errors", 0) for r in reports), default=0)

    assert dev.sub.wait_for(lambda _: errors() >= 10, 30), errors()
    assert dev.proc.poll() is None
    assert dev.forecasts() == []
    assert dev.stop() == 0
    assert dev.stderr.count("gather index out of bounds") <= 3, dev.stderr  # rate-limited
    assert dev.model.read_bytes() == fails_in_use.read_bytes()  # nothing to roll back to
