"""``sensorcast fleet status``: every device under the prefix, one row per device and stream,
read from the retained messages the agents already publish; ``--json`` for scripts.

The JSON document (keys are stable; a value the devices did not send is ``null``)::

    {"prefix", "time", "time_iso",                 # the controller's clock, Unix s
     "summary": {"devices", "online", "offline", "unreachable", "unknown",
                 "bridges_down": [site, ...],
                 "errors",                         # malformed messages ignored
                 "complete"},                      # false: the broker dropped some
     "bridges": {site: true | false},              # a site bridge's connection
     "devices": [{"id", "state", "status", "site", "version", "started", "metrics_time",
                  "model_state": {...} | null,     # its last model/state message, whole
                  "streams": [{"name", "model", "shadow", "last_forecast",
                               "last_forecast_age_s", "skill": {baseline: value},
                               "coverage", "drift", "anomaly", "fallback",
                               "quality_time", "shadow_mae_ratio"}]}]}

``state`` is ``online``, ``offline``, ``unknown`` (no status retained) or ``unreachable``
(its site's bridge is down: the ``online`` the central broker keeps is frozen, not fresh).
Exit status 3 when the view is incomplete (``complete`` false), 1 when the broker cannot be
reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any, Optional

from sensorcast.agent.fleet.client import Connection, FleetClient
from sensorcast.agent.fleet.model import Device, Fleet, StreamState
from sensorcast.agent.logutil import iso_utc

__all__ = [
    "EXIT_INCOMPLETE", "SETTLE_TIMEOUT_S", "add_status_args", "document", "run_status", "table",
]  # fmt: skip

SETTLE_TIMEOUT_S = 30.0  #: Longest wait for the broker's retained messages, seconds.
STATES = ("online", "offline", "unreachable", "unknown")
_HEADER = (
    "DEVICE", "SITE", "STATE", "VERSION", "STREAM", "MODEL", "SHADOW", "LAST FORECAST",
    "SKILL", "COVERAGE", "FLAGS", "LAST UPDATE",
)  # fmt: skip


def add_status_args(parser: argparse.ArgumentParser) -> None:
    """``fleet status``'s own flags (the connection flags are added by the caller)."""
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--stream", metavar="S", help="only stream S (devices without it: no row)")
    parser.add_argument(
        "--settle", metavar="S", type=float, default=0.5,
        help="seconds without a retained message that end the read when the broker does not "
        "echo the controller's marker (default 0.5)",
    )  # fmt: skip


def run_status(args: argparse.Namespace, conn: Connection) -> int:
    """Read the fleet, print it; 0, or :data:`EXIT_INCOMPLETE` when the broker dropped some
    of the retained messages on their way here (a broker that cannot be reached raises
    FleetError)."""
    client = FleetClient(conn)
    client.connect()
    try:
        client.watch(quiet_s=args.settle)
        fleet = client.settle(quiet_s=args.settle, timeout_s=SETTLE_TIMEOUT_S)
    finally:
        client.close()
    if args.json:
        print(json.dumps(document(fleet, args.stream), indent=2, sort_keys=True))
    else:
        print(table(fleet, args.stream))
    if not fleet.complete:
        print(
            "sensorcast fleet: the broker dropped retained messages on their way here (its queue "
            "per client is full): raise max_queued_messages (Mosquitto) above devices x streams "
            "x 5 for a complete view",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return 0


#: The view is incomplete: some devices or messages are missing (the same code as a rollout
#: that left devices for later).
EXIT_INCOMPLETE = 3


def document(fleet: Fleet, stream: Optional[str] = None) -> dict[str, Any]:
    """The ``--json`` document (see the module doc)."""
    devices = []
    for dev in _devices(fleet, stream):
        devices.append(
            {
                "id": dev.id,
                "state": fleet.state(dev),
                "status": dev.status,
                "site": dev.site,
                "version": dev.version,
                "started": dev.started,
                "metrics_time": dev.metrics_time,
                "model_state": dev.model_state,
                "streams": [_stream_doc(fleet, dev, s) for s in _streams(dev, stream)],
            }
        )
    return {
        "prefix": fleet.prefix,
        "time": fleet.time,
        "time_iso": iso_utc(fleet.time),
        "summary": summary(fleet),
        "bridges": dict(sorted(fleet.bridges.items())),
        "devices": devices,
    }


def summary(fleet: Fleet) -> dict[str, Any]:
    """Counts by state, the sites whose bridge is down, the messages ignored."""
    counts = dict.fromkeys(STATES, 0)
    for dev in fleet.devices.values():
        state = fleet.state(dev)
        counts[state] = counts.get(state, 0) + 1
    down = sorted(site for site, up in fleet.bridges.items() if not up)
    return {
        "devices": len(fleet.devices),
        **counts,
        "bridges_down": down,
        "errors": fleet.errors,
        "complete": fleet.complete,
    }


def table(fleet: Fleet, stream: Optional[str] = None) -> str:
    """The text table, one row per device and stream, and a summary line."""
    rows: list[tuple[str, ...]] = [_HEADER]
    for dev in _devices(fleet, stream):
        streams: list[Optional[StreamState]] = [*_streams(dev, stream)] or [None]
        rows.extend(_row(fleet, dev, s) for s in streams)
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if len(rows) == 1:
        lines = [f"no devices under {fleet.prefix}/ (nothing retained on {fleet.prefix}/+/status)"]
    return "\n".join([*lines, "", _summary_line(summary(fleet))])


def _summary_line(s: dict[str, Any]) -> str:
    parts = [f"{s[state]} {state}" for state in STATES if s[state] or state != "unknown"]
    line = f"{s['devices']} devices: {', '.join(parts)}"
    if s["bridges_down"]:
        line += f"; sites with bridge down: {', '.join(s['bridges_down'])}"
    if s["errors"]:
        plural = "s" if s["errors"] != 1 else ""
        line += f"; {s['errors']} malformed message{plural} ignored (see the log)"
    if not s["complete"]:
        line += (
            "; INCOMPLETE: the broker dropped retained messages on their way here "
            "(raise its max_queued_messages above devices x streams)"
        )
    return line


def _devices(fleet: Fleet, stream: Optional[str]) -> Iterator[Device]:
    for key in sorted(fleet.devices):
        dev = fleet.devices[key]
        if stream is None or stream in dev.streams or not dev.streams:
            yield dev


def _streams(dev: Device, stream: Optional[str]) -> list[StreamState]:
    return [dev.streams[n] for n in sorted(dev.streams) if stream is None or n == stream]


def _row(fleet: Fleet, dev: Device, s: Optional[StreamState]) -> tuple[str, ...]:
    age = _age_s(fleet, s)
    skill = s.skill.get("last_value") if s is not None else None
    return (
        dev.id,
        dev.site or "-",
        fleet.state(dev),
        dev.version or "-",
        s.name if s is not None else "-",
        (s.model if s is not None else None) or "-",
        (s.shadow if s is not None else None) or "-",
        _age(age),
        f"{skill:+.2f}" if skill is not None else "-",
        f"{s.coverage:.2f}" if s is not None and s.coverage is not None else "-",
        ",".join(_flags(dev, s)) or "-",
        _last_update(dev, s),
    )


def _stream_doc(fleet: Fleet, dev: Device, s: StreamState) -> dict[str, Any]:
    shadow = (s.quality or {}).get("shadow")
    ratio = shadow.get("mae_ratio") if isinstance(shadow, dict) else None
    flags = _flags(dev, s)
    return {
        "name": s.name,
        "model": s.model,
        "shadow": s.shadow,
        "last_forecast": s.last_forecast,
        "last_forecast_age_s": _age_s(fleet, s),
        "skill": dict(s.skill),
        "coverage": s.coverage,
        "drift": "drift" in flags,
        "anomaly": "anomaly" in flags,
        "fallback": "fallback" in flags,
        "quality_time": s.quality_time,
        "shadow_mae_ratio": ratio if isinstance(ratio, (int, float)) else None,
    }


def _flags(dev: Device, s: Optional[StreamState]) -> list[str]:
    if s is None:
        return []
    anomaly = s.anomaly
    event = dev.anomalies.get(s.name, {})
    when = event.get("time")
    # the anomaly message is sent when one starts or ends; the metrics only every interval
    if isinstance(when, (int, float)) and (dev.metrics_time is None or when > dev.metrics_time):
        anomaly = bool(event.get("anomaly"))
    found = (("drift", s.drift), ("anomaly", anomaly), ("fallback", s.fallback))
    return [name for name, on in found if on]


def _last_update(dev: Device, s: Optional[StreamState]) -> str:
    """The device's last model update outcome, on the row of the stream it was for."""
    state = dev.model_state
    if state is None or (s is not None and state.get("stream") != s.name):
        return "-"
    return f"{state.get('status', '?')} {state.get('action', 'install')}"


def _age_s(fleet: Fleet, s: Optional[StreamState]) -> Optional[float]:
    if s is None or s.last_forecast is None:
        return None
    return round(max(0.0, fleet.time - s.last_forecast), 3)


def _age(age: Optional[float]) -> str:
    if age is None:
        return "-"
    for limit, unit, div in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if age < limit:
            return f"{int(age // div)} {unit} ago"
    return f"{int(age // 86400)} d ago"
