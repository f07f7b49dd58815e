"""Model update actions without a broker: the real updater thread on real bundle files.
``"action": "promote"`` promotes the shadow only if it is the bundle the request names (by
sha256), idempotently, keeping ``.previous``, never as a downgrade; ``"drop_shadow"`` removes
``<model>.shadow`` only if it is that bundle and never a configured ``shadow_model``; every
state message echoes the request's action and id; closed devices refuse actions too."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from sensorcast.agent.config import load_config
from sensorcast.agent.control.actions import MAX_ID
from sensorcast.agent.control.updates import ModelUpdater
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.agent.publish.mqtt5 import Reply

from tests.support.configs import agent_config, topic_stream
from tests.support.updates import NEWER, created, patch_manifest, request

LIVE = NEWER.read_bytes()
#: The same model, made a minute later: another bundle (digest) that fits the stream.
CANDIDATE = patch_manifest(LIVE, created(LIVE), created(LIVE).replace("00:37:36", "00:38:36"))
#: ... and one made a year earlier: promoting it would be a downgrade.
OLDER = patch_manifest(LIVE, created(LIVE), created(LIVE).replace("2026-", "2025-"))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Device:
    """A real :class:`ModelUpdater` on a config file, its live model and maybe a shadow;
    collects the states it publishes and what it tells the agent."""

    def __init__(
        self,
        tmp_path: Path,
        shadow: bytes | None = CANDIDATE,
        updates: Any = None,
        check: Any = None,
        **keys: Any,
    ) -> None:
        (tmp_path / "models").mkdir()
        self.model = tmp_path / "models" / "room.tflite"
        self.model.write_bytes(LIVE)
        self.shadow = self.model.with_name("room.tflite.shadow")
        if shadow is not None:
            self.shadow.write_bytes(shadow)
        if "shadow_model" in keys:  # the config names it: there at start
            (tmp_path / keys["shadow_model"]).write_bytes(CANDIDATE)
        stream = topic_stream("models/room.tflite", "in", **keys)
        updates = {"allow_unsigned": True} if updates is None else updates
        path = agent_config(tmp_path, device="a", port=1, updates=updates, streams=[stream])
        self.states: list[dict[str, Any]] = []
        self.applied: list[tuple[str, str]] = []
        self.shadowed: list[str] = []
        self.replies: list[tuple[str, bytes, bytes | None]] = []
        self._cond = threading.Condition()
        self.updater = ModelUpdater(
            load_config(path), self._publish, lambda s, sha: self.applied.append((s, sha)),
            on_shadow=self.shadowed.append,
            reply=lambda topic, body, corr: self.replies.append((topic, body, corr)),
            **({} if check is None else {"check": check}),
        )  # fmt: skip

    def _publish(self, topic: str, body: bytes) -> None:
        assert topic == "sensorcast/a/model/state"
        with self._cond:
            self.states.append(json.loads(body))
            self._cond.notify_all()

    def ask(self, body: dict[str, Any] | bytes, reply: Reply | None = None) -> dict[str, Any]:
        n = len(self.states)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.updater.handle(payload, 0.0, reply)
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.states) > n, 60), "no state published"
            return self.states[-1]

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.model.parent.iterdir())}


@pytest.fixture
def make(tmp_path: Path) -> Any:
    made: list[Device] = []

    def factory(**kw: Any) -> Device:
        where = tmp_path / str(len(made))
        where.mkdir()
        made.append(Device(where, **kw))
        return made[-1]

    yield factory
    for d in made:
        d.updater.close()


def _act(action: str, data: bytes, rid: Any = "r-1", **extra: Any) -> dict[str, Any]:
    return {"stream": "room", "sha256": _sha(data), "action": action, "id": rid, **extra}


def test_promote_by_sha_swaps_files_keeps_previous_and_is_idempotent(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    d = make()
    caplog.set_level(logging.INFO, logger="sensorcast")
    state = d.ask(_act("promote", CANDIDATE, "rollout-7/w1"))
    label = f"room@{_sha(CANDIDATE)[:12]}"
    assert state["status"] == "applied", state
    assert state["action"] == "promote" and state["id"] == "rollout-7/w1"
    assert state["sha256"] == _sha(CANDIDATE) and state["stream"] == "room"
    assert state["model"] == label and state["previous"] == f"room@{_sha(LIVE)[:12]}"
    assert d.files() == {"room.tflite": CANDIDATE, "room.tflite.previous": LIVE}  # consumed
    assert d.applied == [("room", _sha(CANDIDATE))]  # swapped in by the agent, on trial
    lines = [r.getMessage() for r in caplog.records if "promoted to live model" in r.message]
    assert len(lines) == 1 and "'rollout-7/w1'" in lines[0], lines
    # Again (a controller retrying after a lost answer): applied, nothing changes.
    state = d.ask(_act("promote", CANDIDATE, "rollout-7/w1-retry"))
    assert state["status"] == "applied" and state["reason"] == "already live", state
    assert state["id"] == "rollout-7/w1-retry" and state["model"] == label
    assert d.files() == {"room.tflite": CANDIDATE, "room.tflite.previous": LIVE}
    assert d.applied == [("room", _sha(CANDIDATE))]


def test_promote_of_another_sha_or_no_shadow_is_rejected_and_changes_nothing(make: Any) -> None:
    d = make()
    state = d.ask(_act("promote", b"some other bundle"))
    assert state["status"] == "rejected" and state["action"] == "promote", state
    assert state["sha256"] == _sha(b"some other bundle") and state["id"] == "r-1"
    # It says what the shadow there is, so the controller can tell a stale request.
    assert f"the shadow here is room@{_sha(CANDIDATE)[:12]}" in state["reason"]
    assert _sha(CANDIDATE) in state["reason"] and "nothing changed" in state["reason"]
    assert d.files() == {"room.tflite": LIVE, "room.tflite.shadow": CANDIDATE}
    d.shadow.unlink()
    state = d.ask(_act("promote", CANDIDATE))
    assert state["status"] == "rejected" and "no shadow model" in state["reason"], state
    assert d.files() == {"room.tflite": LIVE} and d.applied == []


def test_promote_refuses_a_downgrade_unless_allowed(make: Any) -> None:
    d = make(shadow=OLDER)
    state = d.ask(_act("promote", OLDER))
    assert state["status"] == "rejected", state
    assert "older than the running model" in state["reason"]
    assert "updates.allow_downgrade" in state["reason"]
    assert d.files() == {"room.tflite": LIVE, "room.tflite.shadow": OLDER}
    d = make(shadow=OLDER, updates={"allow_unsigned": True, "allow_downgrade": True})
    assert d.ask(_act("promote", OLDER))["status"] == "applied"
    assert d.files() == {"room.tflite": OLDER, "room.tflite.previous": LIVE}


def test_drop_shadow_by_sha_and_idempotent(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    d = make()
    caplog.set_level(logging.INFO, logger="sensorcast")
    state = d.ask(_act("drop_shadow", b"not the shadow"))
    assert state["status"] == "rejected" and "the shadow here is room@" in state["reason"]
    assert d.files() == {"room.tflite": LIVE, "room.tflite.shadow": CANDIDATE}
    assert d.shadowed == []
    state = d.ask(_act("drop_shadow", CANDIDATE, "drop-1"))
    assert state["status"] == "applied" and state["action"] == "drop_shadow", state
    assert state["id"] == "drop-1" and state["sha256"] == _sha(CANDIDATE)
    assert "reason" not in state
    assert d.files() == {"room.tflite": LIVE} and d.shadowed == ["room"]  # the agent stops it
    assert any("shadow room@" in r.message and "dropped" in r.message for r in caplog.records)
    state = d.ask(_act("drop_shadow", CANDIDATE, "drop-2"))
    assert state["status"] == "applied" and state["reason"] == "no shadow", state
    assert d.files() == {"room.tflite": LIVE} and d.applied == []


def test_a_configured_shadow_model_is_not_the_devices_to_drop(make: Any) -> None:
    d = make(shadow=None, shadow_model="models/candidate.tflite")
    configured = d.model.with_name("candidate.tflite")
    state = d.ask(_act("drop_shadow", CANDIDATE))
    assert state["status"] == "rejected" and "shadow_model" in state["reason"], state
    assert "config" in state["reason"] and configured.read_bytes() == CANDIDATE
    configured.unlink()  # gone meanwhile: no shadow runs, nothing to drop
    state = d.ask(_act("drop_shadow", CANDIDATE))
    assert state["status"] == "applied" and state["reason"] == "no shadow"
    configured.write_bytes(CANDIDATE)
    # Promoting it leaves the configured file alone (it then is the live model).
    assert d.ask(_act("promote", CANDIDATE))["status"] == "applied"
    assert d.model.read_bytes() == CANDIDATE and configured.read_bytes() == CANDIDATE


def test_every_state_echoes_action_and_id_and_bad_ones_are_rejected(make: Any) -> None:
    d = make()
    state = d.ask(_act("promote", CANDIDATE, rid=123))
    assert state["status"] == "rejected" and "'id' must be a string" in state["reason"]
    assert "id" not in state and state["action"] == "promote"
    state = d.ask(_act("promote", CANDIDATE, rid="x" * (MAX_ID + 1)))
    assert (
        state["status"] == "rejected"
        and f"at most {MAX_ID}" in state["reason"]
        and "id" not in state
    )
    state = d.ask(_act("explode", CANDIDATE))
    assert state["status"] == "rejected" and "install, promote, drop_shadow" in state["reason"]
    assert "action" not in state and state["id"] == "r-1"
    assert d.files() == {"room.tflite": LIVE, "room.tflite.shadow": CANDIDATE}
    state = d.ask(_act("promote", CANDIDATE, rid="x" * MAX_ID))
    assert state["status"] == "applied" and state["id"] == "x" * MAX_ID


def test_installs_echo_their_action_and_id(make: Any) -> None:
    d = make(shadow=None)
    state = d.ask(request(CANDIDATE, shadow=True, id="inst-1"))
    assert state["status"] == "applied" and state["shadow"] is True, state
    assert state["action"] == "install" and state["id"] == "inst-1"
    state = d.ask(request(CANDIDATE))  # no id, no action: today's request
    assert state["status"] == "applied" and state["action"] == "install" and "id" not in state
    assert "sha256" not in d.ask(request(b"junk"))  # refused installs echo no digest, as before


def test_a_closed_device_refuses_actions_and_says_which(make: Any) -> None:
    d = make(updates={})
    for action in ("promote", "drop_shadow"):
        state = d.ask(_act(action, CANDIDATE, f"{action}-1"))
        assert state["status"] == "rejected" and "updates.allow_unsigned" in state["reason"]
        assert state["action"] == action and state["id"] == f"{action}-1"
    assert d.files() == {"room.tflite": LIVE, "room.tflite.shadow": CANDIDATE}


def test_an_action_answers_its_mqtt5_response_topic(make: Any) -> None:
    d = make()
    state = d.ask(_act("drop_shadow", CANDIDATE), Reply("answers/me", b"\x00corr"))
    assert state["status"] == "applied"
    assert d.replies == [("answers/me", json.dumps(state).encode(), b"\x00corr")]


def test_a_promoted_bundle_that_rolls_back_names_its_request_and_is_not_promoted_again(
    make: Any,
) -> None:
    d = make()
    assert d.ask(_act("promote", CANDIDATE, "p-1"))["status"] == "applied"
    d.model.write_bytes(LIVE)  # what the reloader's restore_previous does
    n = len(d.states)
    d.updater.rolled_back("room", _sha(CANDIDATE), "forecast failed: boom", "room@x")
    state = d.states[n]
    assert state["status"] == "rolled_back" and state["action"] == "promote", state
    assert state["id"] == "p-1"
    d.shadow.write_bytes(CANDIDATE)
    state = d.ask(_act("promote", CANDIDATE, "p-2"))
    assert state["status"] == "rejected" and "rolled back" in state["reason"], state
    assert d.model.read_bytes() == LIVE


def test_a_request_refused_on_a_full_queue_still_echoes_its_id(make: Any) -> None:
    """The updater thread is busy (an install stuck in its check): the queue fills, and the
    next action is refused at once, naming its action and id for the controller to retry."""
    release = threading.Event()

    def slow_check(sc: Any) -> Any:
        assert release.wait(30)
        return read_bundle(sc.model)

    d = make(shadow=None, check=slow_check)
    try:
        d.updater.handle(json.dumps(request(CANDIDATE, shadow=True)).encode(), 0.0)
        for i in range(20):  # the first is taken by the thread, 8 are queued, then refusals
            d.updater.handle(json.dumps(_act("drop_shadow", CANDIDATE, f"q-{i}")).encode(), 0.0)
        refused = [s for s in d.states if s["reason"] == "too many updates pending"]
        assert refused and all(s["action"] == "drop_shadow" for s in refused), d.states
        assert refused[-1]["id"] == "q-19" and refused[-1]["sha256"] == _sha(CANDIDATE)
    finally:
        release.set()
