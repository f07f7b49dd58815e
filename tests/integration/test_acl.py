"""Least privilege: the agent under the shipped Mosquitto ACL, ``deploy/mosquitto-acl.conf``
used verbatim, with a password file and no anonymous access.

One device (``pi-kitchen``) runs the real agent; the controller, Home Assistant and a second
device (``pi-garage``) log in with their own passwords as the file names them. Every topic the
agent reads or writes must get through (a silent ACL denial would lose forecasts or model
updates without an error anywhere), and the other device must reach none of them. The ACL
that docs/config.md hinted at before (``pattern read sensorcast/%c/...``) loses ``model/set``
with the default client id: the last test shows it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.agents import start_agent
from tests.support.bridges import BridgedPair
from tests.support.brokers import MosquittoBroker, run_mosquitto
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, topic_stream
from tests.support.host import missing_tool
from tests.support.paths import DEMO_DIR, REPO

pytestmark = pytest.mark.mqtt

ACL = REPO / "deploy" / "mosquitto-acl.conf"
DEVICE, OTHER, CONTROLLER, HASS = "pi-kitchen", "pi-garage", "controller", "homeassistant"
BRIDGE, DASHBOARD = "bridge", "dashboard"  # a fleet: a site's bridge, a consumer
USERS = (DEVICE, OTHER, CONTROLLER, HASS, BRIDGE, DASHBOARD)
PERIOD = 0.2  # the fast bundle's period, seconds
NOT_AUTHORIZED = 135  # MQTT 5 PUBACK reason code
NO_SUBSCRIBERS = 16  # MQTT 5 PUBACK reason code: accepted, but nobody subscribed

# docs/config.md before issue 13: "pattern read sensorcast/%c/... for devices, topic write
# sensorcast/+/model/set for the controller's user only", completed with the writes and reads
# it did not mention, so that only its read rule is on trial.
OLD_DOCS_ACL = """\
pattern read sensorcast/%c/#
pattern write sensorcast/%u/#
pattern write homeassistant/#
pattern read homeassistant/status
pattern readwrite sensors/%u/#
user controller
topic write sensorcast/+/model/set
topic read sensorcast/#
"""


def _password(user: str) -> str:
    return f"{user}-Pa55-{user[::-1]}"


class Login:
    """A real MQTT 5 client logged in as one user of the ACL: collects the messages it may
    read, and the broker's answer (PUBACK reason code) to each QoS 1 publish."""

    def __init__(self, port: int, user: str, topics: tuple[str, ...] = ()) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._acks: dict[int, int] = {}
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._refused = ""
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{user}-test-{uuid.uuid4().hex[:6]}",
            protocol=paho.MQTTv5,
        )
        self.client.username_pw_set(user, _password(user))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda *_: self._ready.set()
        self._subscribe = [(t, 1) for t in topics]
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._ready.wait(10), f"{user}: no CONNACK/SUBACK {self._refused}"
        assert not self._refused, f"{user}: login refused: {self._refused}"

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self._refused = str(rc)
            self._ready.set()
        elif self._subscribe:
            client.subscribe(self._subscribe)
        else:
            self._ready.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        with self._cond:
            self._acks[mid] = int(rc.value)
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1; returns the broker's PUBACK reason code (0: accepted)."""
        mid = self.client.publish(topic, payload, qos=1).mid
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._acks, 10), f"no PUBACK for {topic}"
            return self._acks[mid]

    def wait_for(
        self, predicate: Callable[[list[tuple[str, bytes]]], bool], timeout: float
    ) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout=timeout)

    def received(self, match: Callable[[str], bool]) -> list[bytes]:
        with self._cond:
            return [p for t, p in self.messages if match(t)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _kind(topic: str) -> str:
    """Which of the agent's topics ``topic`` is: status, forecast, discovery, ..."""
    if topic.startswith(("homeassistant/sensor/", "homeassistant/binary_sensor/")):
        return "discovery"
    return topic.rsplit("/", 1)[-1]  # status, forecast, quality, metrics, state


@pytest.fixture(scope="module")
def passwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        missing_tool("mosquitto_passwd is not installed: apt-get install mosquitto")
    assert tool is not None
    path = tmp_path_factory.mktemp("acl-passwd") / "passwd"
    for i, user in enumerate(USERS):
        create = ["-c"] if i == 0 else []
        subprocess.run([tool, *create, "-b", str(path), user, _password(user)], check=True)
    path.chmod(0o644)  # Mosquitto started as root reads it as the user `mosquitto`
    return path


def _broker(passwd: Path, acl: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto with deploy/mosquitto.conf's commented-out login lines, uncommented, for
    ``passwd`` and ``acl``."""
    shipped = (REPO / "deploy" / "mosquitto.conf").read_text()
    lines = [
        ln.removeprefix("# ")
        for ln in shipped.splitlines()
        if ln.startswith(("# allow_anonymous", "# password_file", "# acl_file"))
    ]
    assert len(lines) == 3, lines
    auth = "\n".join(lines).replace("/mosquitto/config/passwd", str(passwd))
    auth = auth.replace("/mosquitto/config/acl", str(acl))
    # log_type all: Mosquitto logs each publish it refuses ("Denied PUBLISH from ...").
    yield from run_mosquitto(f"listener {{port}} 127.0.0.1\n{auth}\nlog_type all\n")


@pytest.fixture(scope="module")
def acl_broker(passwd: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto under the shipped ACL file itself."""
    yield from _broker(passwd, ACL)


# name: (ACL text, the agent's [mqtt] client_id (None: the default), model/set arrives)
CLIENT_ID_ACLS = {
    "old-docs-hint": (OLD_DOCS_ACL, None, False),
    "shipped-with-%c": (ACL.read_text().replace("%u", "%c"), DEVICE, True),
}


@pytest.fixture(params=sorted(CLIENT_ID_ACLS))
def client_id_acl(
    request: pytest.FixtureRequest, passwd: Path, tmp_path: Path
) -> Iterator[tuple[MosquittoBroker, str | None, bool]]:
    """Mosquitto under an ACL keyed on the client id (%c), the agent's client id for it, and
    whether model/set reaches the agent."""
    text, client_id, delivered = CLIENT_ID_ACLS[request.param]
    acl = tmp_path / "acl"
    acl.write_text(text)
    acl.chmod(0o644)
    for broker in _broker(passwd, acl):
        yield broker, client_id, delivered


@dataclass
class Device:
    """A running agent logged in as ``pi-kitchen`` and what it needs for model updates."""

    dir: Path
    proc: subprocess.Popen[str]
    key: Ed25519PrivateKey
    bundle: bytes

    def update_request(self, stream: str = "room") -> bytes:
        """A correctly signed model/set request re-installing the running bundle."""
        return json.dumps({
            "stream": stream,
            "sha256": hashlib.sha256(self.bundle).hexdigest(),
            "signature": base64.b64encode(self.key.sign(self.bundle)).decode(),
            "data": base64.b64encode(self.bundle).decode(),
        }).encode()  # fmt: skip

    def log(self) -> str:
        return (self.dir / "agent.log").read_text(errors="replace")


def _start_device(d: Path, port: int, bundle: Path, client_id: str | None = None) -> Device:
    """``sensorcast run`` for ``pi-kitchen`` as a device under the ACL would be configured."""
    (d / "models").mkdir(parents=True)
    shutil.copy(bundle, d / "models" / "room.tflite")  # updates replace it: a writable copy
    key = Ed25519PrivateKey.generate()
    (d / "update.pub").write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    (d / "mqtt-password").write_text(_password(DEVICE) + "\n")
    config = agent_config(
        d,
        device=DEVICE,
        port=port,
        mqtt={
            "username": DEVICE,
            "password_file": "mqtt-password",
            "retain": True,
            "client_id": client_id,
        },
        state={"dir": d / "state"},
        metrics={"interval_s": 1},
        updates={"public_key": "update.pub"},
        streams=[topic_stream("models/room.tflite", f"sensors/{DEVICE}/room")],
    )
    with (d / "agent.log").open("w") as log:  # a file: a full pipe would stall the agent
        proc = start_agent(config, stdin=subprocess.DEVNULL, stderr=log)
    return Device(d, proc, key, bundle.read_bytes())


def _stop(device: Device) -> None:
    device.proc.send_signal(signal.SIGTERM)
    try:
        device.proc.wait(30)
    except subprocess.TimeoutExpired:
        device.proc.kill()
        device.proc.wait()


def _online(login: Login) -> bool:
    return login.wait_for(lambda ms: (f"sensorcast/{DEVICE}/status", b"online") in ms, 30)


@dataclass
class Site:
    broker: MosquittoBroker
    device: Device
    hass: Login
    controller: Login
    other: Login  #: pi-garage's login, subscribed to everything it might try to read


@pytest.fixture(scope="module")
def site(
    acl_broker: MosquittoBroker, fast_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """Broker under the shipped ACL; the agent online; its readings published under
    ``sensors/pi-kitchen/room`` by a sensor script logged in as the device."""
    broker = acl_broker
    other = Login(broker.port, OTHER, ("sensorcast/#", "homeassistant/#", "sensors/#"))
    hass = Login(
        broker.port,
        HASS,
        ("homeassistant/#", "sensorcast/+/status", "sensorcast/+/+/forecast"),
    )
    controller = Login(
        broker.port,
        CONTROLLER,
        ("sensorcast/+/model/state", "sensorcast/+/status", "sensorcast/+/+/quality",
         "sensorcast/+/metrics"),
    )  # fmt: skip
    device = _start_device(tmp_path_factory.mktemp("acl-device"), broker.port, fast_bundle)
    sensor = Login(broker.port, DEVICE)
    try:
        assert _online(hass), f"agent not online under the ACL:\n{device.log()}"
        rows = np.loadtxt(DEMO_DIR / "room.csv", delimiter=",", skiprows=1)[:60, 1:]
        for line in json_lines(rows, 1_700_000_000, PERIOD):
            assert sensor.publish(f"sensors/{DEVICE}/room", line.encode()) == 0
        yield Site(broker, device, hass, controller, other)
    finally:
        _stop(device)
        for login in (sensor, controller, hass, other):
            login.close()


def test_agent_comes_online_and_home_assistant_gets_its_forecasts(site: Site) -> None:
    assert site.hass.wait_for(lambda ms: sum(_kind(t) == "forecast" for t, _ in ms) >= 10, 30), (
        f"no forecasts for Home Assistant:\n{site.device.log()}"
    )
    forecast = json.loads(site.hass.received(lambda t: t.endswith("/room/forecast"))[-1])
    assert forecast["device"] == DEVICE and forecast["stream"] == "room"
    assert site.hass.received(lambda t: t == f"sensorcast/{DEVICE}/status")[-1] == b"online"


def test_the_controllers_model_update_reaches_the_device(site: Site) -> None:
    before = len(site.controller.received(lambda t: t.endswith("/model/state")))
    for topic in (f"sensorcast/{DEVICE}/model/set", "sensorcast/fleet/model/set"):
        assert site.controller.publish(topic, site.device.update_request()) == 0, topic
    assert site.controller.wait_for(
        lambda ms: sum(t == f"sensorcast/{DEVICE}/model/state" for t, _ in ms) >= before + 2, 30
    ), f"no model/state reply:\n{site.device.log()}"
    for state in site.controller.received(lambda t: t.endswith("/model/state"))[before:]:
        body = json.loads(state)
        assert body["device"] == DEVICE and body["status"] == "applied", body


def test_another_device_can_neither_write_nor_read_its_topics(site: Site) -> None:
    other = site.other
    # Its own topics work: the denials below are about whose topics they are.
    assert other.publish(f"sensorcast/{OTHER}/room/forecast", b"{}") == 0
    assert other.publish(f"homeassistant/sensor/sensorcast_{OTHER}/x_y_next/config", b"") == 0
    for topic in (
        f"sensorcast/{DEVICE}/model/set",
        "sensorcast/fleet/model/set",
        f"sensorcast/{DEVICE}/room/forecast",
        f"sensorcast/{DEVICE}/status",
        f"sensorcast/{DEVICE}/model/state",
        f"homeassistant/sensor/sensorcast_{DEVICE}/room_temperature_next/config",
        "homeassistant/status",
        f"sensors/{DEVICE}/room",
    ):
        assert other.publish(topic, site.device.update_request("garage")) == NOT_AUTHORIZED, topic

    # Had a refused request got through, the agent would have answered it (a rejection:
    # no stream "garage") before the controller's, which comes after it in every queue.
    before = len(site.controller.received(lambda t: t.endswith("/model/state")))
    assert (
        site.controller.publish(f"sensorcast/{DEVICE}/model/set", site.device.update_request()) == 0
    )
    assert site.controller.wait_for(
        lambda ms: sum(t.endswith("/model/state") for t, _ in ms) > before, 30
    ), site.device.log()
    states = [json.loads(p) for p in site.controller.received(lambda t: t.endswith("/state"))]
    assert all("garage" not in json.dumps(s) for s in states), states

    # Reads: pi-garage has been subscribed to sensorcast/#, homeassistant/# and sensors/#
    # since before the agent started. Once Home Assistant has the agent's forecasts and a
    # message to pi-garage's own model/set topic (published after them) has come, every
    # message of the agent's that the broker would give pi-garage has come too.
    assert site.hass.wait_for(lambda ms: any(_kind(t) == "forecast" for t, _ in ms), 30)
    marker = b'{"marker": true}'
    assert site.controller.publish(f"sensorcast/{OTHER}/model/set", marker) == 0
    assert other.wait_for(lambda ms: (f"sensorcast/{OTHER}/model/set", marker) in ms, 10)
    leaked = [t for t, _ in other.messages if DEVICE in t]
    assert not leaked, leaked


def test_every_topic_the_agent_uses_gets_through(site: Site) -> None:
    """status, discovery, forecasts (Home Assistant's login); quality, metrics and model/state
    (the controller's); Home Assistant's birth message the other way; no publish refused."""

    def kinds(login: Login) -> dict[str, int]:
        counts: dict[str, int] = {}
        for topic, _ in login.messages:
            if DEVICE in topic:
                counts[_kind(topic)] = counts.get(_kind(topic), 0) + 1
        return counts

    want_hass = {"status", "discovery", "forecast"}
    assert site.hass.wait_for(lambda _: want_hass <= set(kinds(site.hass)), 30), kinds(site.hass)
    # 2 per target (next step, last step), 8 per stream (anomaly and diagnostics)
    assert site.hass.wait_for(lambda _: kinds(site.hass)["discovery"] >= 10, 30), kinds(site.hass)
    discovery = kinds(site.hass)["discovery"]
    # Home Assistant restarts: its birth message must reach the agent, which announces again.
    assert site.hass.publish("homeassistant/status", b"online") == 0
    assert site.hass.wait_for(lambda _: kinds(site.hass)["discovery"] >= 2 * discovery, 30), (
        f"the agent did not hear homeassistant/status:\n{site.device.log()}"
    )

    want = {"status", "quality", "metrics"}
    assert site.controller.wait_for(lambda _: want <= set(kinds(site.controller)), 60), (
        kinds(site.controller),
        site.device.log(),
    )
    # model/state: from the update test, or now
    assert (
        site.controller.publish(f"sensorcast/{DEVICE}/model/set", site.device.update_request()) == 0
    )
    assert site.controller.wait_for(lambda _: "state" in kinds(site.controller), 30)

    denied = [
        line
        for line in site.broker.log.read_text(errors="replace").splitlines()
        if "Denied" in line and f"sensorcast-{DEVICE}" in line
    ]
    assert not denied, denied
    assert "Traceback" not in site.device.log()


def test_compose_healthcheck_works_with_a_login(acl_broker: MosquittoBroker) -> None:
    """deploy/compose.yaml's healthcheck, as it must run once anonymous access is off."""
    tool = shutil.which("mosquitto_sub")
    if tool is None:
        missing_tool("mosquitto_sub is not installed: apt-get install mosquitto-clients")
    assert tool is not None
    done = subprocess.run(
        [tool, "-h", "127.0.0.1", "-p", str(acl_broker.port), "-u", DEVICE, "-P",
         _password(DEVICE), "-t", "$SYS/broker/uptime", "-C", "1", "-W", "5"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.endswith(" seconds\n"), done


def test_client_id_acls_need_the_device_id_as_client_id(
    client_id_acl: tuple[MosquittoBroker, str | None, bool], fast_bundle: Path, tmp_path: Path
) -> None:
    """The ACL docs/config.md hinted at before (``pattern read sensorcast/%c/...``) with the
    default client id ``sensorcast-pi-kitchen``: the agent runs and publishes, and never
    hears of a model update, silently. The shipped ACL with ``%c`` for ``%u`` and
    ``client_id = "pi-kitchen"`` delivers it, as the shipped ACL does with ``%u``."""
    broker, client_id, delivered = client_id_acl
    controller = Login(broker.port, CONTROLLER, ("sensorcast/+/status", "sensorcast/+/model/state"))
    device = _start_device(tmp_path / "device", broker.port, fast_bundle, client_id)
    try:
        assert _online(controller), device.log()
        topic = f"sensorcast/{DEVICE}/model/set"
        assert controller.publish(topic, device.update_request()) == 0  # the broker took it
        # Delivered, the reply comes within a second or two; give a lost one ten.
        replied = controller.wait_for(
            lambda ms: any(t.endswith("/model/state") for t, _ in ms), 30 if delivered else 10
        )
        assert replied == delivered, device.log()
    finally:
        _stop(device)
        controller.close()


# ---- A fleet: the controller, sites' bridges and dashboards at the central broker ----

ROLLOUT = "sensorcast/fleet/rollout/r1"
BRIDGE_STATE = "sensorcast/fleet/sites/site-a/bridge"


def test_fleet_roles_publish_only_their_own_topics(acl_broker: MosquittoBroker) -> None:
    """The controller publishes model requests and rollout states, a bridge its site's state;
    a dashboard reads those and the devices' state and publishes nothing; a device may
    publish neither another device's request nor a rollout state."""
    port = acl_broker.port
    reads = (ROLLOUT, "sensorcast/fleet/sites/+/bridge", "sensorcast/+/+/forecast")
    dashboard = Login(port, DASHBOARD, reads)
    controller = Login(port, CONTROLLER, ("sensorcast/fleet/sites/+/bridge", ROLLOUT))
    logins = {user: Login(port, user) for user in (DEVICE, OTHER, BRIDGE)}
    try:
        state = json.dumps({"id": "r1", "wave": 1, "state": "soaking"}).encode()
        assert controller.publish(ROLLOUT, state) == 0
        # accepted; MQTT 5 says when nobody subscribed (pi-garage's agent is not running)
        assert controller.publish(f"sensorcast/{OTHER}/model/set", b"{}") in (0, NO_SUBSCRIBERS)
        assert logins[BRIDGE].publish(BRIDGE_STATE, b"1") == 0
        assert logins[BRIDGE].publish(f"sensorcast/{OTHER}/room/forecast", b"{}") == 0
        refused = {
            DEVICE: (f"sensorcast/{OTHER}/model/set", ROLLOUT, BRIDGE_STATE),
            OTHER: (f"sensorcast/{DEVICE}/model/set", "sensorcast/fleet/model/set", ROLLOUT),
            BRIDGE: (f"sensorcast/{DEVICE}/model/set", "sensorcast/fleet/model/set", ROLLOUT),
        }
        for user, topics in refused.items():
            for topic in topics:
                assert logins[user].publish(topic, b"0") == NOT_AUTHORIZED, (user, topic)
        for topic in (ROLLOUT, BRIDGE_STATE, f"sensorcast/{OTHER}/model/set"):
            assert dashboard.publish(topic, b"0") == NOT_AUTHORIZED, topic

        want = {
            (ROLLOUT, state),
            (BRIDGE_STATE, b"1"),
            (f"sensorcast/{OTHER}/room/forecast", b"{}"),
        }
        assert dashboard.wait_for(lambda ms: want <= set(ms), 10), dashboard.messages
        # Nothing refused got through: each topic kept the one message allowed on it.
        assert dashboard.received(lambda t: t in (ROLLOUT, BRIDGE_STATE)) == [state, b"1"]
        assert controller.wait_for(
            lambda ms: {(ROLLOUT, state), (BRIDGE_STATE, b"1")} <= set(ms), 10
        )
        assert controller.received(lambda t: t == ROLLOUT) == [state]
    finally:
        for login in (dashboard, controller, *logins.values()):
            login.close()


def test_a_sites_bridge_works_under_the_acl(passwd: Path) -> None:
    """deploy/mosquitto-site.conf and mosquitto-central.conf, both under the shipped ACL: the
    site's bridge logs in at the central broker as ``bridge`` (its will is accepted: the login
    would be refused otherwise), every kind of topic a device publishes at the site crosses
    it, the controller's requests come back to the device, and a dashboard reads the bridge's
    state going 0 and 1 as the link is cut and restored."""
    with BridgedPair(
        passwd=passwd, acl=ACL, bridge_password=_password(BRIDGE),
        login=(DASHBOARD, _password(DASHBOARD)),
    ) as pair:  # fmt: skip
        dashboard = Login(pair.central.port, DASHBOARD, ("sensorcast/#",))
        controller = Login(pair.central.port, CONTROLLER)
        device = Login(pair.site.port, DEVICE, (f"sensorcast/{DEVICE}/model/set",))
        try:
            published = [
                (f"sensorcast/{DEVICE}/{kind}", f"{kind}-body".encode())
                for kind in ("status", "metrics", "room/forecast", "room/quality",
                             "room/anomaly", "model/state")
            ]  # fmt: skip
            for topic, body in published:
                assert device.publish(topic, body) == 0, topic
            assert dashboard.wait_for(lambda ms: set(published) <= set(ms), 10), (
                dashboard.messages, pair.logs())  # fmt: skip
            assert controller.publish(f"sensorcast/{DEVICE}/model/set", b"request") == 0
            assert device.wait_for(
                lambda ms: (f"sensorcast/{DEVICE}/model/set", b"request") in ms, 10
            )

            pair.cut()
            assert pair.wait_bridge("0", 15), pair.logs()
            pair.restore()
            assert pair.wait_bridge("1", 30), pair.logs()
            assert dashboard.received(lambda t: t == BRIDGE_STATE)[-2:] == [b"0", b"1"]
        finally:
            for login in (dashboard, controller, device):
                login.close()
