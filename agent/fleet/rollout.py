"""The rollout loop: read the fleet, decide (:func:`~sensorcast.agent.fleet.decide.decide`),
save the plan, then send the requests, until the rollout is done, stopped or incomplete.

The plan is saved (atomically, synced) *before* the requests it decided go out: a controller
killed in between resumes with those requests marked in flight and sends them again, which
the devices take as the same request (each carries the same id)."""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from sensorcast.agent.errors import SensorcastError
from sensorcast.agent.fleet.decide import Action, Policy, decide
from sensorcast.agent.fleet.model import Fleet
from sensorcast.agent.fleet.plan import DONE, INCOMPLETE, STOPPED_ALL, Plan, save
from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.publish.topics import FleetTopics

__all__ = ["EXIT_CODES", "Bundle", "FleetLink", "Runner", "progress"]

logger = logging.getLogger(__name__)

#: The exit code of a finished rollout, by its status.
EXIT_CODES = {DONE: 0, STOPPED_ALL: 1, INCOMPLETE: 3}


class FleetLink(Protocol):
    """What the loop needs of :class:`~sensorcast.agent.fleet.client.FleetClient`."""

    def view(self) -> Fleet: ...

    def wait(self, predicate: Callable[[Fleet], bool], timeout_s: float) -> bool: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...

    def publish_many(
        self, messages: list[tuple[str, bytes]], qos: int = 1, retain: bool = False
    ) -> None: ...


@dataclass(frozen=True)
class Bundle:
    """What an install request carries."""

    data: bytes
    signature: Optional[str]  #: Base64 Ed25519 (None: unsigned, by the user's choice).


def progress(plan: Plan) -> dict[str, Any]:
    """The retained progress message: the rollout and one line per device."""
    return {
        "id": plan.id, "stream": plan.stream, "sha256": plan.sha256, "label": plan.label,
        "status": plan.status, "reason": plan.reason, "waves": plan.waves,
        "updated": plan.updated_at,
        "devices": {
            d: {"wave": r.wave + 1, "step": r.step, "reason": r.reason}
            for d, r in plan.devices.items()
        },
    }  # fmt: skip


class Runner:
    """Runs one plan to its end over ``link``, saving it to ``path`` after every change."""

    def __init__(
        self,
        link: FleetLink,
        plan: Plan,
        path: Path,
        policy: Policy,
        bundle: Bundle,
        prefix: str,
        poll_s: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.link, self.plan, self.path, self.policy = link, plan, path, policy
        self.bundle, self.topics = bundle, FleetTopics(prefix)
        self.poll_s, self.clock = poll_s, clock
        self._data = base64.b64encode(bundle.data).decode()
        self._log = RateLimitedLog(logger, 30.0)

    def run(self) -> int:
        """Until the rollout finishes; returns its exit code (0, 1 or 3)."""
        plan = self.plan
        self._publish_progress()
        while True:
            before = {d: (r.step, r.reason) for d, r in plan.devices.items()}
            status = plan.status
            actions = decide(plan, self.link.view(), self.clock(), self.policy)
            changed = self._log_changes(before, status)
            if changed or actions:
                save(plan, self.path)  # before the requests go out: see the module's doc
                if changed:
                    self._publish_progress()
            if actions:
                self._send(actions)
            if plan.finished:
                return EXIT_CODES[plan.status]
            self.link.wait(lambda _fleet: False, self.poll_s)

    def _log_changes(self, before: dict[str, tuple[str, Optional[str]]], status: str) -> bool:
        changed = False
        for device, (step, reason) in before.items():
            rec = self.plan.devices[device]
            if (rec.step, rec.reason) != (step, reason):
                changed = True
                why = f": {rec.reason}" if rec.reason else ""
                logger.info("%s (wave %d): %s%s", device, rec.wave + 1, rec.step, why)
        if self.plan.status != status:
            changed = True
            why = f": {self.plan.reason}" if self.plan.reason else ""
            logger.info("rollout %s: %s%s", self.plan.id, self.plan.status, why)
        return changed

    def request(self, action: Action) -> dict[str, Any]:
        """The model/set body of ``action``."""
        body: dict[str, Any] = {"stream": self.plan.stream, "sha256": self.plan.sha256}
        if action.kind == "install":
            body.update({"data": self._data, "shadow": True})
            if self.bundle.signature is not None:
                body["signature"] = self.bundle.signature
        else:
            body["action"] = action.kind
        body["id"] = action.id
        return body

    def _send(self, actions: list[Action]) -> None:
        """Every request of this turn at once, then their acks (one round trip, not one per
        device)."""
        messages = [
            (self.topics.model_set(a.device), json.dumps(self.request(a)).encode()) for a in actions
        ]
        try:
            self.link.publish_many(messages, qos=1)
        except SensorcastError as exc:  # FleetError; unanswered, it is sent again after --timeout
            self._log.warning(
                "send", "cannot send %d requests (those unanswered are sent again later): %s",
                len(actions), exc,
            )  # fmt: skip

    def _publish_progress(self) -> None:
        body = json.dumps(progress(self.plan)).encode()
        try:
            self.link.publish(self.topics.rollout(self.plan.id), body, qos=1, retain=True)
        except (
            SensorcastError
        ) as exc:  # FleetError; the state file is the record, this only its mirror
            self._log.warning("progress", "cannot publish the rollout's progress: %s", exc)
