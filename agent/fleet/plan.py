"""A rollout's state: what was decided for every device, kept in a file (written atomically
and synced after every change) so that a controller killed at any point resumes where it
stopped, and mirrored retained on the broker for dashboards."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from sensorcast.agent.errors import ConfigError

__all__ = [
    "ACTIVE", "DONE", "DROPPING", "FAILED", "FINAL", "INCOMPLETE", "OFFLINE", "PASSED",
    "PENDING", "PROMOTED", "PROMOTE_SENT", "RUNNING", "SHADOW_SENT", "SOAKING", "STOPPED",
    "STOPPED_ALL", "STOPPING", "DeviceRecord", "Plan", "load", "save",
]  # fmt: skip

#: Device steps, in the order a device goes through them.
PENDING = "pending"  #: Its wave has not reached it, or it is waiting to come online.
SHADOW_SENT = "shadow_sent"  #: Install as shadow requested; waiting for it to run.
SOAKING = "soaking"  #: Its shadow runs (confirmed); the soak time runs.
PASSED = "passed"  #: The gate held; waiting for the rest of its wave.
PROMOTE_SENT = "promote_sent"  #: Promote requested; waiting for the live model to be it.
PROMOTED = "promoted"  #: Its live model is the bundle.
DROPPING = "dropping"  #: drop_shadow requested (then ``failed`` or ``stopped``).
FAILED = "failed"  #: The gate (or the device) said no; ``reason`` says why.
STOPPED = "stopped"  #: It passed, but its wave failed: shadow dropped, live model kept.
OFFLINE = "offline"  #: Away longer than --offline-wait (or never answered): resume later.
FINAL = frozenset({PROMOTED, FAILED, STOPPED, OFFLINE})
ACTIVE = frozenset({SHADOW_SENT, SOAKING, PROMOTE_SENT, DROPPING})  #: A request in flight.

#: Rollout statuses.
RUNNING, STOPPING = "running", "stopping"
DONE, STOPPED_ALL, INCOMPLETE = "done", "stopped", "incomplete"
_VERSION = 1


@dataclass
class DeviceRecord:
    """One device's place in the rollout."""

    id: str
    wave: int  #: Its wave, from 0.
    step: str = PENDING
    reason: Optional[str] = None  #: Why it failed, stopped or waits (one line).
    note: Optional[str] = None  #: Anything else the report says (``already live``).
    request: Optional[str] = None  #: The id of the last request sent to it.
    sent_at: float = 0.0  #: When that request was (last) sent, Unix s (0: send it now).
    since: float = 0.0  #: When its current step began, Unix s.
    attempts: int = 0  #: Times the current request was sent.
    started: Optional[float] = None  #: Its agent's start time when its shadow was confirmed.
    soak_start: Optional[float] = None  #: When the soak began (None: not running), Unix s.
    offline_since: Optional[float] = None  #: Away since (Unix s), while it is.
    after_drop: str = FAILED  #: The step a ``dropping`` device ends in.
    shadow_dropped: Optional[bool] = None  #: For failed/stopped ones: drop confirmed.
    measured: dict[str, Optional[float]] = field(default_factory=dict)  #: Gate metrics.

    @property
    def failed(self) -> bool:
        """Failed the gate, its shadow dropped or being dropped."""
        return self.step == FAILED or (self.step == DROPPING and self.after_drop == FAILED)


@dataclass
class Plan:
    """The rollout: what, where, in which waves, and every device's record."""

    id: str  #: ``<stream>-<sha12>-<random>``, in request ids and the retained topic.
    stream: str
    sha256: str
    label: str  #: The bundle's label (``room@dd9129743d00``).
    created: str  #: The bundle's manifest ``created``.
    waves: list[float]  #: Cumulative percentages.
    cohorts: list[list[str]]  #: The devices of each wave, in cohort order.
    soak_s: float
    gate: list[str]
    max_failed: float
    signed: bool
    status: str = RUNNING
    reason: Optional[str] = None  #: Why it stopped.
    started_at: float = 0.0
    updated_at: float = 0.0
    devices: dict[str, DeviceRecord] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in (DONE, STOPPED_ALL, INCOMPLETE)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["version"] = _VERSION
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Plan:
        """Raises KeyError/TypeError/ValueError when ``body`` is not a plan."""
        if body.get("version") != _VERSION:
            raise ValueError(f"version {body.get('version')!r}, not {_VERSION}")
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in body.items() if k in names and k != "devices"}
        plan = cls(**values)
        known = {f.name for f in fields(DeviceRecord)}
        for key, rec in body["devices"].items():
            plan.devices[key] = DeviceRecord(**{k: v for k, v in rec.items() if k in known})
        if sorted(plan.devices) != sorted(d for c in plan.cohorts for d in c):
            raise ValueError("its devices are not its cohorts'")
        return plan

    def resume(self) -> None:
        """A new run of this rollout: requests in flight are sent again at once (the device
        side is idempotent), and devices given up as offline are tried again."""
        for rec in self.devices.values():
            if rec.step in ACTIVE:
                rec.sent_at = 0.0
            elif rec.step == OFFLINE:
                rec.step, rec.reason, rec.offline_since, rec.since = PENDING, None, None, 0.0
        if self.status == INCOMPLETE:
            self.status = RUNNING


def load(path: Path) -> Optional[Plan]:
    """The plan in ``path``; None if there is no such file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"rollout state {path}: cannot read it: {exc.strerror}") from exc
    try:
        return Plan.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"rollout state {path}: not a rollout state file ({exc}); move it away to start "
            "a new rollout, or name another with --state"
        ) from exc


def save(plan: Plan, path: Path) -> None:
    """Write ``plan`` to ``path`` atomically: a synced temporary file renamed over it, then
    the directory synced, so a kill or power loss leaves the old state or the new one."""
    directory = path.parent if str(path.parent) else Path(".")
    data = json.dumps(plan.to_json(), indent=1, sort_keys=True).encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
