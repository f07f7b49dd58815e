"""1,000 simulated devices on one real broker: a load generator publishes each device's
retained status, metrics and quality report in the shapes a real agent publishes (recorded by
:mod:`bench.fleet.shapes`), and answers ``model/set`` requests as a device does.

One paho client does it all: the controller under test cannot tell, since it only reads the
retained topics and the ``model/state`` answers. A device's shadow is as good as its live
model (``mae_ratio`` 0.95) unless it is one of the ``bad`` devices (1.6). Signatures are not
checked (the controller's signing is measured elsewhere); a bundle's sha256 is, as a device
checks it before anything else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["BAD_RATIO", "GOOD_RATIO", "SimDevice", "SimFleet", "apply", "make_devices", "messages"]

GOOD_RATIO = 0.95
BAD_RATIO = 1.6


@dataclass
class SimDevice:
    """One simulated device's state."""

    id: str
    site: str
    live: str  #: Live model label, ``room@<sha12>``.
    started: float
    bad: bool = False  #: Its shadows forecast worse than its live model.
    shadow: Optional[str] = None
    shadow_since: float = 0.0  #: When its shadow was installed (time.time()).
    answers: dict[str, int] = field(default_factory=dict)  #: By action.


def make_devices(
    count: int, sites: int = 10, bad: Iterable[str] = (), live: str = "room@000000000000"
) -> dict[str, SimDevice]:
    """``count`` devices ``sim-0000``... spread over ``sites`` sites, started an hour ago."""
    now = time.time()
    bad_ids = set(bad)
    ids = (f"sim-{i:04d}" for i in range(count))
    return {
        d: SimDevice(d, f"site-{i % sites}", live, now - 3600, bad=d in bad_ids)
        for i, d in enumerate(ids)
    }


def _quality(shapes: dict[str, Any], dev: SimDevice, now: float) -> bytes:
    body = dict(shapes["quality"], model=dev.live, time=now)
    if dev.shadow is None:
        body["shadow"] = None
    else:
        ratio = BAD_RATIO if dev.bad else GOOD_RATIO
        shadow = dict(shapes["quality"]["shadow"], model=dev.shadow, mae_ratio=ratio)
        shadow["mae"] = round(float(shadow["live_mae"]) * ratio, 6)
        body["shadow"] = shadow
    return json.dumps(body).encode()


def _metrics(shapes: dict[str, Any], dev: SimDevice, now: float) -> bytes:
    template = shapes["metrics"]
    room = dict(template["streams"]["room"], model=dev.live, last_forecast=now)
    ratio = BAD_RATIO if dev.bad else GOOD_RATIO
    room["shadow"] = None if dev.shadow is None else {"model": dev.shadow, "mae_ratio": ratio}
    body = dict(
        template, device=dev.id, site=dev.site, time=now, started=dev.started,
        streams={"room": room},
    )  # fmt: skip
    return json.dumps(body).encode()


def messages(
    prefix: str, shapes: dict[str, Any], dev: SimDevice, now: Optional[float] = None
) -> list[tuple[str, bytes]]:
    """``dev``'s retained metrics and quality report as ``(topic, payload)``, made ``now``."""
    when = time.time() if now is None else now
    base = f"{prefix}/{dev.id}"
    return [
        (f"{base}/metrics", _metrics(shapes, dev, when)),
        (f"{base}/room/quality", _quality(shapes, dev, when)),
    ]


def apply(dev: SimDevice, body: dict[str, Any]) -> dict[str, Any]:
    """The device's side of one model/set request; the state message it answers with."""
    sha = str(body.get("sha256", ""))
    state = _apply(dev, body, sha, f"room@{sha[:12]}")
    state.update(device=dev.id, time=time.time(), stream=body.get("stream"))
    if "id" in body:
        state["id"] = body["id"]
    dev.answers[state["action"]] = dev.answers.get(state["action"], 0) + 1
    return state


def _apply(dev: SimDevice, body: dict[str, Any], sha: str, label: str) -> dict[str, Any]:
    action = body.get("action", "install")
    out: dict[str, Any] = {"status": "applied", "sha256": sha, "action": action}
    if action == "promote":
        if dev.live == label:
            return out
        if dev.shadow != label:
            return {**out, "status": "rejected", "reason": "no such shadow"}
        dev.live, dev.shadow = label, None
    elif action == "drop_shadow":
        if dev.shadow in (None, label):
            dev.shadow = None
    elif action == "install":
        try:
            data = base64.b64decode(body.get("data", ""), validate=True)
        except (binascii.Error, ValueError):
            data = b""
        if hashlib.sha256(data).hexdigest() != sha:
            return {**out, "status": "rejected", "reason": "sha256 mismatch"}
        dev.shadow, dev.shadow_since = label, time.time()
        out["shadow"] = True
    else:
        return {**out, "status": "rejected", "reason": f"unknown action {action!r}"}
    return out


class SimFleet:
    """``count`` devices ``sim-0000``... in ``sites`` sites under ``prefix`` at ``port``."""

    def __init__(
        self,
        port: int,
        prefix: str,
        shapes: dict[str, Any],
        count: int,
        *,
        sites: int = 10,
        bad: Iterable[str] = (),
        live: str = "room@000000000000",
        report_s: float = 1.0,
    ) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.prefix = prefix
        self._shapes = shapes
        self.devices = make_devices(count, sites, bad, live)
        self.report_s = report_s  #: How often a device with a shadow reports, seconds.
        self.garbage = 0  #: Requests that were not JSON objects.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{prefix}")
        self.client.max_inflight_messages_set(1000)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish_all(self) -> float:
        """Publish every device's retained status, metrics and quality (QoS 1) and wait for
        the broker's acks; the seconds it took."""
        began = time.perf_counter()
        infos = []
        for dev in self.devices.values():
            infos.append(self.client.publish(f"{self.prefix}/{dev.id}/status", b"online", 1, True))
            for topic, body in messages(self.prefix, self._shapes, dev):
                infos.append(self.client.publish(topic, body, 1, True))
        for info in infos:
            info.wait_for_publish(60)
        return time.perf_counter() - began

    # -- what a device answers ---------------------------------------------------------------

    def answer(self) -> None:
        """Answer ``model/set`` requests from now on, and re-publish every device with a
        shadow every ``report_s`` (a real agent's quality report every ``quality.interval_s``)."""
        self.client.subscribe(f"{self.prefix}/+/model/set", qos=1)
        self._ticker = threading.Thread(target=self._tick, name="sim-ticker", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.report_s):
            with self._lock:
                busy = [d for d in self.devices.values() if d.shadow is not None]
            for dev in busy:
                for topic, body in messages(self.prefix, self._shapes, dev):
                    self.client.publish(topic, body, 1, True)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        device = msg.topic[len(self.prefix) + 1 : -len("/model/set")]
        dev = self.devices.get(device)
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = None
        if dev is None or not isinstance(body, dict):
            self.garbage += 1
            return
        with self._lock:
            state = apply(dev, body)
        base = f"{self.prefix}/{dev.id}"
        self.client.publish(f"{base}/model/state", json.dumps(state).encode(), 1, True)
        for topic, payload in messages(self.prefix, self._shapes, dev):
            self.client.publish(topic, payload, 1, True)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(10)
        self.client.loop_stop()
        self.client.disconnect()
