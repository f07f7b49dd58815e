"""Home Assistant Core 2024.3.3, for real: the agent runs the demo bundle (300 s periods,
residual quantiles in its manifest) on the demo's 30 days of room data against a real
Mosquitto, and a real Home Assistant, onboarded and given its MQTT integration through the
REST API, shows through its REST API: the forecast sensors with unit, device class, the
interval (``lower``/``upper`` at the step and by step, ``level``) and ISO-8601 times as
attributes; the anomaly ``binary_sensor`` going on and off around an injected step; the
diagnostic entities from the quality report (states as the templates promise, ``entity_category``
in the saved entity registry); availability (the agent stopped: unavailable; back: available).

One Home Assistant start: the agent runs twice against it (the second run starts from the
first's saved windows), so the diagnostics are read from the quality report the first run
published at shutdown, with enough actuals behind it for coverage and skill.
"""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest

from tests.homeassistant.hass import HomeAssistant
from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.configs import agent_config, stdin_stream
from tests.support.mqtt import Subscriber

pytestmark = [pytest.mark.homeassistant, pytest.mark.mqtt]

DEVICE = "kitchen"
N1 = 200  #: Rows of the first run: 24 fill the window, then 176 forecasts with their actuals.
FAULT = (N1 + 40, N1 + 52)  #: Rows with a step of 3 standard deviations (12 periods, 1 h).
END = N1 + 160
SENSOR = "sensor.sensorcast_kitchen_room_"
BINARY = "binary_sensor.sensorcast_kitchen_room_"
DIAGNOSTIC = {
    f"{BINARY}drift", f"{BINARY}fallback", f"{SENSOR}skill", f"{SENSOR}coverage",
    f"{SENSOR}error_ratio", f"{SENSOR}last_forecast", f"{SENSOR}model",
}  # fmt: skip
PRIMARY = {f"{SENSOR}temperature_next", f"{SENSOR}temperature_end", f"{BINARY}anomaly"}

States = dict[str, dict[str, Any]]


def _iso(ts: float) -> str:
    """What Home Assistant's ``timestamp_utc`` filter makes of Unix seconds."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _last(sub: Subscriber, suffix: str) -> Optional[dict[str, Any]]:
    payloads = sub.payloads(suffix)
    return json.loads(payloads[-1]) if payloads else None


def _feed(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("".join(lines))
    proc.stdin.flush()


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr


def _ours(states: States) -> States:
    return {k: v for k, v in states.items() if k.startswith((SENSOR, BINARY))}


def _check_forecast_sensors(states: States, f: dict[str, Any]) -> None:
    """The next and end sensors against the forecast ``f`` they show."""
    for entity, step in ((f"{SENSOR}temperature_next", 0), (f"{SENSOR}temperature_end", -1)):
        s, a = states[entity], states[entity]["attributes"]
        assert float(s["state"]) == round(f["values"][step][0], 3), s
        assert a["unit_of_measurement"] == "°C" and a["device_class"] == "temperature", a
        assert a["state_class"] == "measurement" and a["model"] == f["model"], a
        assert a["level"] == f["level"] == 0.8, a
        assert a["lower"] == f["lower"][step][0] < a["upper"] == f["upper"][step][0], a
        assert a["lower_by_step"] == [row[0] for row in f["lower"]], a
        assert a["upper_by_step"] == [row[0] for row in f["upper"]], a
        assert a["values"] == [row[0] for row in f["values"]], a
        assert a["at"] == f["steps"][step] and a["at_iso"] == _iso(f["steps"][step]), a
        assert a["window_end_iso"] == _iso(f["window_end"]), a
        assert a["fallback"] is None and a["out_of_range"] is False, a
    last = states[f"{SENSOR}last_forecast"]
    assert last["state"] == _iso(f["window_end"] + f["period_s"]), last
    assert last["attributes"]["device_class"] == "timestamp", last
    assert states[f"{SENSOR}model"]["state"] == f["model"]


def _diagnostics(q: dict[str, Any]) -> dict[str, str]:
    """The states the quality report ``q`` must give the diagnostic entities."""

    def number(v: Optional[float], digits: int, scale: float = 1.0) -> str:
        return "unknown" if v is None else str(round(v * scale, digits))

    return {
        f"{BINARY}drift": "on" if q.get("drift") else "off",
        f"{BINARY}fallback": "on" if q.get("fallback") else "off",
        f"{SENSOR}skill": number((q.get("skill") or {}).get("last_value"), 1, 100),
        f"{SENSOR}coverage": number(q.get("coverage"), 1, 100),
        f"{SENSOR}error_ratio": number(q.get("ratio"), 3),
    }


def test_home_assistant_shows_forecast_band_anomaly_diagnostics_and_availability(
    home_assistant: HomeAssistant,
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    demo_dir: Path,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    ha = home_assistant
    config = agent_config(
        tmp_path,
        device=DEVICE,
        port=mosquitto.port,
        prefix=topic_prefix,
        streams=[stdin_stream(demo_dir / "room.tflite", units={"temperature": "°C"})],
    )
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/{DEVICE}/#")
    data = np.loadtxt(demo_dir / "room-30d.csv", delimiter=",", skiprows=1)[:END]
    data[FAULT[0] : FAULT[1], 1] += 3 * data[:, 1].std()
    lines = [json.dumps({"ts": ts, "temperature": t, "humidity": h}) + "\n" for ts, t, h in data]

    # Run 1: forecasts, then the agent stops.
    proc = start_agent(config)
    try:
        _feed(proc, lines[:N1])
        assert sub.wait_for(lambda _: len(sub.payloads("/forecast")) >= N1 - 30, 60)

        def shown(states: States) -> bool:
            f = _last(sub, "/forecast")
            a = states.get(f"{SENSOR}temperature_next", {}).get("attributes", {})
            return f is not None and a.get("window_end") == f["window_end"]

        states = ha.wait("the last forecast in Home Assistant", shown, 30)
        forecast = _last(sub, "/forecast")
        assert forecast is not None and set(_ours(states)) == PRIMARY | DIAGNOSTIC, states
        _check_forecast_sensors(states, forecast)
    finally:
        _stop(proc)
    unavailable = ha.wait(
        "every entity unavailable once the agent stopped",
        lambda s: all(v["state"] == "unavailable" for v in _ours(s).values()),
        20,
    )
    assert set(_ours(unavailable)) == PRIMARY | DIAGNOSTIC
    report = _last(sub, "/quality")
    assert report is not None, "no quality report"
    assert report.get("coverage") is not None and report.get("skill", {}).get("last_value")

    # Run 2: available again, with run 1's last quality report; then a step in the data.
    proc = start_agent(config)
    try:

        def diagnosed(states: States) -> bool:
            want = _diagnostics(report)
            return all(states.get(k, {}).get("state") == v for k, v in want.items())

        states = ha.wait("diagnostics as the quality report says", diagnosed, 30)
        assert states[f"{SENSOR}coverage"]["attributes"]["unit_of_measurement"] == "%"
        assert states[f"{BINARY}drift"]["attributes"]["device_class"] == "problem"
        assert states[f"{SENSOR}skill"]["attributes"]["time_iso"] == report.get("time_iso")

        # Up to the fault's second row: the step is raised on its first period, and cannot
        # end before two periods back inside the band (the model follows a step within a
        # few periods: fed at once, Home Assistant would see on and off in one go).
        _feed(proc, lines[N1 : FAULT[0] + 2])
        states = ha.wait(
            "the anomaly binary_sensor on",
            lambda s: s.get(f"{BINARY}anomaly", {}).get("state") == "on",
            30,
        )
        on = states[f"{BINARY}anomaly"]["attributes"]
        assert on["device_class"] == "problem" and on["feature"] == "temperature", on
        assert on["reason"] in ("step", "outside_band") and on["since_iso"].endswith("Z"), on
        assert FAULT[0] <= np.searchsorted(data[:, 0], on["since"]) <= FAULT[0] + 1, on
        _feed(proc, lines[FAULT[0] + 2 :])
        ha.wait(
            "the anomaly binary_sensor off",
            lambda s: s.get(f"{BINARY}anomaly", {}).get("state") == "off",
            30,
        )
    finally:
        _stop(proc)
    ha.wait(
        "unavailable again",
        lambda s: all(v["state"] == "unavailable" for v in _ours(s).values()),
        20,
    )

    ha.stop()
    registry = {k: v for k, v in ha.registry().items() if k in PRIMARY | DIAGNOSTIC}
    assert set(registry) == PRIMARY | DIAGNOSTIC
    for entity, entry in registry.items():
        want = "diagnostic" if entity in DIAGNOSTIC else None
        assert entry["entity_category"] == want and entry["platform"] == "mqtt", entry
    complaints = [
        line
        for line in ha.log.read_text(errors="replace").splitlines()
        if ("WARNING" in line or "ERROR" in line)
        and ("sensorcast" in line or "components.mqtt" in line or "helpers.template" in line)
    ]
    assert not complaints, "\n".join(complaints)
