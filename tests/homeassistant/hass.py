"""A real Home Assistant Core for tests: ``hass`` from .venv-ha (scripts/setup-venv-ha) in a
process of its own, with a fresh config directory, set up through its REST API the way a
person's first visit does: onboarding creates the owner (and a token), the MQTT
integration's config flow points it at the test's Mosquitto.

Only the standard library talks to it (urllib), so the test process needs nothing of Home
Assistant's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

from sensorcast.agent.demo.brokers import free_port

from tests.support.host import missing_tool
from tests.support.paths import REPO

__all__ = ["HASS", "VERSION", "HomeAssistant"]

VERSION = "2024.3.3"
HASS = REPO / ".venv-ha" / "bin" / "hass"

_CONFIGURATION = """\
homeassistant:
  name: sensorcast test
  latitude: 52.52
  longitude: 13.40
  elevation: 34
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: DE
http:
  server_host: 127.0.0.1
  server_port: {port}
logger:
  default: warning
"""


class HomeAssistant:
    """One Home Assistant in ``config_dir`` on a free loopback port (:meth:`start`, then
    :meth:`onboard` and :meth:`add_mqtt`); its output is in ``log``."""

    def __init__(self, config_dir: Path) -> None:
        if not HASS.exists():
            missing_tool(f"Home Assistant {VERSION} is not installed: run scripts/setup-venv-ha")
        self.dir = config_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = config_dir.parent / "hass.out"
        self.token: Optional[str] = None
        self._proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, timeout_s: float = 120) -> None:
        """Start ``hass`` (``--skip-pip``: everything it needs is in .venv-ha) and wait until
        its HTTP API answers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "configuration.yaml").write_text(_CONFIGURATION.format(port=self.port))
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                [str(HASS), "--skip-pip", "--log-no-color", "-c", str(self.dir)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"},
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc.poll() is None, f"hass exited:\n{self.tail()}"
            try:
                self.request("/api/onboarding")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.5)
        raise AssertionError(f"hass did not answer within {timeout_s} s:\n{self.tail()}")

    def request(self, path: str, body: Optional[dict[str, Any]] = None, form: bool = False) -> Any:
        """GET ``path`` (or POST ``body`` as JSON, or as a form): the decoded JSON answer."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
            headers["Content-Type"] = (
                "application/x-www-form-urlencoded" if form else "application/json"
            )
        req = urllib.request.Request(self.url + path, data=data, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as answer:
            return json.loads(answer.read())

    def onboard(self) -> None:
        """Create the owner through the onboarding API and log in (an access token)."""
        client = f"{self.url}/"
        user = self.request(
            "/api/onboarding/users",
            {"client_id": client, "name": "Test", "username": "test",
             "password": "sensorcast-test", "language": "en"},
        )  # fmt: skip
        token = self.request(
            "/auth/token",
            {"grant_type": "authorization_code", "code": user["auth_code"], "client_id": client},
            form=True,
        )
        self.token = token["access_token"]

    def add_mqtt(self, port: int) -> dict[str, Any]:
        """The MQTT integration's config flow, as the UI runs it: broker ``127.0.0.1:port``,
        discovery on its default prefix ``homeassistant``. Returns the created entry."""
        flow = self.request(
            "/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False}
        )
        assert flow["type"] == "form" and flow["step_id"] == "broker", flow
        done = self.request(
            f"/api/config/config_entries/flow/{flow['flow_id']}",
            {"broker": "127.0.0.1", "port": port},
        )
        assert done["type"] == "create_entry", done
        entry: dict[str, Any] = done["result"]
        assert entry["state"] == "loaded", entry
        return entry

    def states(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every entity's state (``/api/states``) whose id contains ``prefix``."""
        return {s["entity_id"]: s for s in self.request("/api/states") if prefix in s["entity_id"]}

    def wait(
        self, what: str, predicate: Callable[[dict[str, dict[str, Any]]], bool], timeout_s: float
    ) -> dict[str, dict[str, Any]]:
        """Poll ``/api/states`` until ``predicate(states)``; the states then."""
        deadline = time.monotonic() + timeout_s
        states = self.states()
        while not predicate(states):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout_s} s; states: {states}")
            time.sleep(0.25)
            states = self.states()
        return states

    def tail(self, lines: int = 60) -> str:
        """The end of Home Assistant's output."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM (Home Assistant saves its registries), SIGKILL if it hangs."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def registry(self) -> dict[str, dict[str, Any]]:
        """The entity registry Home Assistant saved (read after :meth:`stop`), by entity id."""
        doc = json.loads((self.dir / ".storage" / "core.entity_registry").read_text())
        return {e["entity_id"]: e for e in doc["data"]["entities"]}
