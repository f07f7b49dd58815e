"""Model updates over MQTT with a real broker and agent: inline and by URL, the digest and
an Ed25519 signature checked, bundles that do not fit refused, the old model kept running,
and every outcome on ``.../model/state``."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.configs import agent_config, topic_stream
from tests.support.mqtt import Subscriber
from tests.support.paths import DATA_DIR

DEMO = DATA_DIR / "room_demo.tflite"  #: older than room_float32.tflite
OTHER = DATA_DIR / "room_float32.tflite"  # same features, another bundle


def _send(port: int, topic: str, body: dict[str, Any]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, json.dumps(body), qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def _states(sub: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(p) for p in sub.payloads("/model/state") if p]


def test_updates_are_verified_checked_and_swapped_in(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(DEMO, models / "room.tflite")
    key = Ed25519PrivateKey.generate()
    (tmp_path / "update.pub").write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    config = agent_config(
        tmp_path,
        device="up",
        port=mosquitto.port,
        prefix=topic_prefix,
        homeassistant={"enabled": False},
        updates={"public_key": "update.pub"},
        streams=[topic_stream("models/room.tflite", "in")],
    )
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/#")
    set_topic = f"{topic_prefix}/up/model/set"
    other = OTHER.read_bytes()
    signed = {
        "stream": "room",
        "sha256": hashlib.sha256(other).hexdigest(),
        "signature": base64.b64encode(key.sign(other)).decode(),
    }
    with start_agent(config) as proc:
        try:
            assert sub.wait_for(lambda ms: any(p == b"online" for _, p, _ in ms), 20)

            def state_count(n: int) -> bool:
                return sub.wait_for(lambda _: len(_states(sub)) >= n, 30)

            # 1. wrong digest: refused, nothing changes
            inline = base64.b64encode(other).decode()
            _send(mosquitto.port, set_topic, {**signed, "sha256": "0" * 64, "data": inline})
            assert state_count(1)
            assert _states(sub)[-1]["status"] == "rejected"
            reason = _states(sub)[-1]["reason"]
            assert reason.startswith("digest mismatch"), reason
            assert signed["sha256"][:8] not in reason  # no digest of what did not match
            # 2. unsigned: refused
            unsigned = {"stream": "room", "sha256": signed["sha256"], "data": inline}
            _send(mosquitto.port, set_topic, unsigned)
            assert state_count(2) and "signature" in _states(sub)[-1]["reason"]
            # 3. a signed bundle that does not fit the stream (no manifest: a plain file)
            junk = b"not a model" * 100
            _send(mosquitto.port, f"{topic_prefix}/fleet/model/set", {
                "stream": "room", "sha256": hashlib.sha256(junk).hexdigest(),
                "signature": base64.b64encode(key.sign(junk)).decode(),
                "data": base64.b64encode(junk).decode()})  # fmt: skip
            assert state_count(3) and _states(sub)[-1]["status"] == "rejected"
            assert (models / "room.tflite").read_bytes() == DEMO.read_bytes()  # untouched

            # 4. the good one, by URL from a local web server
            serve = tmp_path / "www"
            serve.mkdir()
            (serve / "room-v2.tflite").write_bytes(other)
            handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=serve)
            httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{httpd.server_address[1]}/room-v2.tflite"
            try:
                _send(mosquitto.port, set_topic, {**signed, "url": url})
                assert state_count(4), _states(sub)
            finally:
                httpd.shutdown()
                httpd.server_close()
            last = _states(sub)[-1]
            assert last["status"] == "applied" and last["sha256"] == signed["sha256"], last
            assert (models / "room.tflite").read_bytes() == other
            assert (models / "room.tflite.previous").read_bytes() == DEMO.read_bytes()
            label = f"room@{signed['sha256'][:12]}"  # named after the stream's model file
            time.sleep(1.0)  # the loop swaps it in between two forecasts
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert f"model reloaded: now {label}" in stderr, stderr
    assert stderr.count("model update refused") == 3
