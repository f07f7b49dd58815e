"""The rollout's state and decisions, on synthetic fleet views: every device's steps from
pending to promoted (or failed, its shadow dropped, or offline and reported), the wave
verdicts, the state file (atomic, resumable), and one decision over 1,000 devices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest
from sensorcast.agent.errors import ConfigError
from sensorcast.agent.fleet.decide import Action, Policy, decide
from sensorcast.agent.fleet.gate import parse_gate
from sensorcast.agent.fleet.model import Device, Fleet, StreamState
from sensorcast.agent.fleet.plan import DeviceRecord, Plan, load, save
from sensorcast.agent.fleet.waves import split_waves

SHA = "ab" * 32
NEW, OLD = f"room@{SHA[:12]}", "room@0123456789ab"
POLICY = Policy([parse_gate("mae_ratio<=1.05")], timeout_s=5, offline_wait_s=60)
SOAK = 30.0


class Sim:
    """Devices that answer requests as agents do; ``ratio``: the shadow's MAE ratio."""

    def __init__(self, ids: list[str], ratio: float = 0.98) -> None:
        self.fleet = Fleet("p", time=0.0)
        self.ratio: dict[str, Optional[float]] = {d: ratio for d in ids}
        self.reject: dict[str, str] = {}
        self.deaf: set[str] = set()
        self.sent: list[Action] = []
        for d in ids:
            stream = StreamState("room", model=OLD)
            self.fleet.devices[d] = Device(d, "online", started=100.0, streams={"room": stream})

    def stream(self, d: str) -> StreamState:
        return self.fleet.devices[d].streams["room"]

    def answer(self, action: Action) -> None:
        self.sent.append(action)
        dev, s = self.fleet.devices[action.device], self.stream(action.device)
        if action.device in self.deaf or dev.status != "online":
            return
        state: dict[str, Any] = {"id": action.id, "status": "applied", "sha256": SHA}
        if action.device in self.reject and action.kind == "install":
            state = {"id": action.id, "status": "rejected", "reason": self.reject[action.device]}
        elif action.kind == "install":
            s.shadow = NEW
        elif action.kind == "promote":
            s.model, s.shadow = NEW, None
        elif s.shadow == NEW:
            s.shadow = None
        dev.model_state = state

    def report(self, now: float) -> None:
        for d in self.fleet.devices:
            s = self.stream(d)
            shadow = None
            if s.shadow is not None:
                shadow = {"model": s.shadow, "mae_ratio": self.ratio[d], "errors": 0}
            s.quality, s.quality_time = {"model": s.model, "shadow": shadow}, now


def _plan(
    ids: list[str], waves: tuple[float, ...] = (34, 67, 100), max_failed: float = 0.1
) -> Plan:
    cohorts = split_waves(ids, waves)
    plan = Plan("r1", "room", SHA, NEW, "2026", list(waves), cohorts, SOAK,
                ["mae_ratio<=1.05"], max_failed, True)  # fmt: skip
    for wave, cohort in enumerate(cohorts):
        for d in cohort:
            plan.devices[d] = DeviceRecord(d, wave)
    return plan


def _run(plan: Plan, sim: Sim, start: float = 1000.0, until: float = 2000.0,
         policy: Policy = POLICY) -> float:  # fmt: skip
    """Step time by 1 s until the plan is finished (or ``until``); returns the time."""
    now = start
    while not plan.finished and now < until:
        sim.report(now)
        for action in decide(plan, sim.fleet, now, policy):
            sim.answer(action)
        now += 1.0
    return now


def _steps(plan: Plan) -> dict[str, str]:
    return {d: r.step for d, r in plan.devices.items()}


def test_a_good_bundle_goes_out_wave_by_wave_and_is_promoted_everywhere() -> None:
    ids = ["a", "b", "c"]
    plan, sim = _plan(ids), Sim(ids)
    first = plan.cohorts[0][0]
    now = 1000.0
    while not any(a.kind == "promote" for a in sim.sent):  # the first wave's soak
        sim.report(now)
        for action in decide(plan, sim.fleet, now, POLICY):
            sim.answer(action)
        now += 1
    assert now >= 1000 + SOAK
    assert {a.device for a in sim.sent} == {first}  # nobody else before the canary passed
    assert [a.kind for a in sim.sent] == ["install", "promote"]
    assert sim.sent[0].id == f"r1:{first}:install"
    _run(plan, sim, now)
    assert plan.status == "done" and set(_steps(plan).values()) == {"promoted"}
    assert all(sim.stream(d).model == NEW for d in ids)
    assert [a.kind for a in sim.sent] == ["install", "promote"] * 3
    assert plan.devices[first].measured["mae_ratio"] == 0.98


def test_a_worse_bundle_stops_at_the_first_wave_with_the_reason() -> None:
    ids = [f"d{i}" for i in range(6)]
    plan, sim = _plan(ids, (34, 67, 100)), Sim(ids, ratio=3.41)
    _run(plan, sim)
    assert plan.status == "stopped"
    assert plan.reason == "wave 1: 2 of 2 devices failed the gate (more than --max-failed 0.1)"
    for d in plan.cohorts[0]:
        rec = plan.devices[d]
        assert rec.step == "failed" and rec.reason == "mae_ratio 3.41 > 1.05"
        assert rec.shadow_dropped is True and sim.stream(d).shadow is None
    assert all(sim.stream(d).model == OLD for d in ids)  # live models stay
    assert {a.device for a in sim.sent} == set(plan.cohorts[0])  # the rest never touched
    assert {plan.devices[d].step for d in plan.cohorts[1] + plan.cohorts[2]} == {"pending"}


def test_passed_devices_of_a_failed_wave_are_not_promoted_and_lose_their_shadow() -> None:
    ids = [f"d{i}" for i in range(4)]
    plan, sim = _plan(ids, (50, 100), max_failed=0.0), Sim(ids)
    bad, good = plan.cohorts[0]
    sim.ratio[bad] = 2.0
    _run(plan, sim)
    assert plan.status == "stopped"
    assert plan.devices[good].step == "stopped" and plan.devices[good].shadow_dropped
    assert plan.devices[good].reason == "passed, but its wave failed"
    assert sim.stream(good).model == OLD and sim.stream(good).shadow is None


def test_a_failure_share_within_max_failed_goes_on() -> None:
    ids = [f"d{i}" for i in range(10)]
    plan, sim = _plan(ids, (100,), max_failed=0.1), Sim(ids)
    sim.ratio[plan.cohorts[0][3]] = 9.0
    _run(plan, sim)
    assert plan.status == "done"
    assert sorted(_steps(plan).values()) == ["failed"] + ["promoted"] * 9


def test_an_offline_device_is_waited_for_then_reported_and_the_rollout_is_incomplete() -> None:
    ids = ["a", "b", "c"]
    plan, sim = _plan(ids), Sim(ids)
    away = plan.cohorts[1][0]
    sim.fleet.devices[away].status = "offline"
    _run(plan, sim)
    assert plan.status == "incomplete"
    rec = plan.devices[away]
    assert rec.step == "offline" and rec.reason is not None and "offline for 60 s" in rec.reason
    assert not rec.failed and sim.stream(away).model == OLD
    assert [plan.devices[d].step for d in (plan.cohorts[0][0], plan.cohorts[2][0])] == [
        "promoted", "promoted",
    ]  # fmt: skip
    # It comes back: a later run resumes it (and only it).
    sim.fleet.devices[away].status = "online"
    plan.resume()
    sim.sent.clear()
    _run(plan, sim, 3000.0, 4000.0)
    assert plan.status == "done" and sim.stream(away).model == NEW
    assert {a.device for a in sim.sent} == {away}


def test_a_device_back_within_offline_wait_is_retried() -> None:
    ids = ["a"]
    plan, sim = _plan(ids, (100,)), Sim(ids)
    sim.fleet.devices["a"].status = "offline"
    now = _run(plan, sim, 1000.0, 1030.0)
    assert plan.devices["a"].step == "pending" and not sim.sent
    sim.fleet.devices["a"].status = "online"
    _run(plan, sim, now)
    assert plan.status == "done"


def test_an_unknown_device_behind_a_down_bridge_is_not_reachable() -> None:
    plan, sim = _plan(["a"], (100,)), Sim(["a"])
    sim.fleet.devices["a"].site = "north"
    sim.fleet.bridges["north"] = False
    _run(plan, sim)
    assert plan.status == "incomplete"
    assert plan.devices["a"].reason == "unreachable for 60 s (resume later)"


def test_a_restart_during_the_soak_fails_the_device() -> None:
    plan, sim = _plan(["a"], (100,)), Sim(["a"])
    now = _run(plan, sim, 1000.0, 1010.0)
    assert plan.devices["a"].step == "soaking"
    sim.fleet.devices["a"].started = 1005.0
    _run(plan, sim, now)
    rec = plan.devices["a"]
    assert (
        rec.step == "failed"
        and rec.reason == "restarted during soak (the agent's start time changed)"
    )
    assert rec.shadow_dropped and plan.status == "stopped"


def test_a_different_shadow_fails_the_device() -> None:
    plan, sim = _plan(["a"], (100,)), Sim(["a"])
    now = _run(plan, sim, 1000.0, 1010.0)
    sim.stream("a").shadow = "room@ffffffffffff"
    _run(plan, sim, now)
    assert plan.devices["a"].reason == "its shadow is now room@ffffffffffff, not this bundle"


def test_a_rejected_install_fails_with_the_devices_reason() -> None:
    plan, sim = _plan(["a"], (100,)), Sim(["a"])
    sim.reject["a"] = "signature does not verify with updates.public_key"
    _run(plan, sim)
    rec = plan.devices["a"]
    assert rec.reason == "shadow rejected: signature does not verify with updates.public_key"
    assert rec.step == "failed" and plan.status == "stopped"


def test_too_few_residuals_fail_once_the_soak_and_timeout_are_over() -> None:
    plan, sim = _plan(["a"], (100,)), Sim(["a"], ratio=None)  # type: ignore[arg-type]
    _run(plan, sim)
    assert plan.devices["a"].reason is not None
    assert "too few residuals" in plan.devices["a"].reason


def test_a_drifting_shadow_fails() -> None:
    plan, sim = _plan(["a"], (100,)), Sim(["a"])
    now = 1000.0
    while not plan.finished:
        sim.report(now)
        q = sim.stream("a").quality
        if q and q["shadow"]:
            q["shadow"]["drift"] = True
        for action in decide(plan, sim.fleet, now, POLICY):
            sim.answer(action)
        now += 1
    assert plan.devices["a"].reason == "shadow drifting"


def test_a_device_already_running_the_bundle_counts_as_promoted() -> None:
    plan, sim = _plan(["a", "b"], (100,)), Sim(["a", "b"])
    sim.stream("a").model = NEW
    _run(plan, sim)
    assert plan.status == "done" and plan.devices["a"].note == "already live"
    assert {a.device for a in sim.sent} == {"b"}


def test_an_unanswered_request_is_sent_again_then_reported() -> None:
    plan, sim = _plan(["a"], (100,)), Sim(["a"])
    sim.deaf.add("a")
    _run(plan, sim)
    assert plan.status == "incomplete"
    assert len(sim.sent) == 12 and {a.id for a in sim.sent} == {"r1:a:install"}  # every 5 s
    assert plan.devices["a"].reason == "online but never answered 12 install requests"


def test_a_killed_controller_resumes_from_its_state_file(tmp_path: Path) -> None:
    """Killed mid-soak, and again right after deciding a promote it never sent: the reloaded
    plan sends what is in flight again and finishes the same."""
    ids = ["a", "b", "c"]
    plan, sim = _plan(ids), Sim(ids)
    path = tmp_path / "state.json"
    now = _run(plan, sim, 1000.0, 1010.0)
    save(plan, path)
    assert plan.devices[plan.cohorts[0][0]].step == "soaking"
    plan = load(path)  # type: ignore[assignment]
    plan.resume()
    now = _run(plan, sim, now, now + 5)
    # Decide a promote, save, "die" before sending it.
    while not any(a.kind == "promote" for a in decide(plan, sim.fleet, now, POLICY)):
        sim.report(now)
        now += 1
    save(plan, path)
    plan = load(path)  # type: ignore[assignment]
    plan.resume()
    assert plan.devices[plan.cohorts[0][0]].step == "promote_sent"
    resent = decide(plan, sim.fleet, now, POLICY)
    assert [a.kind for a in resent] == ["promote"]
    for action in resent:
        sim.answer(action)
    _run(plan, sim, now + 1)
    assert plan.status == "done" and all(sim.stream(d).model == NEW for d in ids)


def test_the_state_file_is_written_whole(tmp_path: Path) -> None:
    plan = _plan(["a", "b"])
    path = tmp_path / "s.json"
    save(plan, path)
    again = load(path)
    assert again is not None and again.to_json() == plan.to_json()
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary left
    assert load(tmp_path / "none.json") is None


@pytest.mark.parametrize("text", ["{", "[]", '{"version": 9}', '{"version": 1, "id": "x"}'])
def test_a_broken_state_file_is_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"rollout state .*s.json: not a rollout state file"):
        load(path)


def test_a_state_file_whose_devices_disagree_with_its_cohorts_is_refused(tmp_path: Path) -> None:
    body = _plan(["a", "b"]).to_json()
    del body["devices"]["a"]
    (tmp_path / "s.json").write_text(json.dumps(body))
    with pytest.raises(ConfigError, match="its devices are not its cohorts'"):
        load(tmp_path / "s.json")


def test_one_decision_over_a_thousand_devices_judges_and_promotes_them_all() -> None:
    """The whole wave in one call (its time is measured by bench/run fleet, not here)."""
    ids = [f"dev-{i:04d}" for i in range(1000)]
    plan, sim = _plan(ids, (100,)), Sim(ids)
    decide(plan, sim.fleet, 1000.0, POLICY)  # every one gets its install
    for rec in plan.devices.values():
        rec.step, rec.soak_start, rec.started = "soaking", 900.0, 100.0
    for s in (sim.stream(d) for d in ids):
        s.shadow = NEW
    sim.report(1000.0)
    actions = decide(plan, sim.fleet, 1000.0, POLICY)  # all judged, all promoted
    assert len(actions) == 1000 and {a.kind for a in actions} == {"promote"}


class _Link:
    """A fake broker link over a :class:`Sim`: requests are answered at once, time moves
    1 s per wait; it checks that the state file says a request is in flight before it goes."""

    def __init__(self, sim: Sim, state: Path) -> None:
        self.sim, self.state, self.now = sim, state, 1000.0
        self.requests: list[dict[str, Any]] = []
        self.progress: list[dict[str, Any]] = []

    def view(self) -> Fleet:
        self.sim.report(self.now)
        return self.sim.fleet

    def wait(self, _predicate: Any, _timeout_s: float) -> bool:
        self.now += 1.0
        return False

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        body = json.loads(payload)
        if "/fleet/rollout/" in topic:
            assert retain and qos == 1
            self.progress.append(body)
            return
        assert topic == f"p/{topic.split('/')[1]}/model/set" and not retain and qos == 1
        saved = json.loads(self.state.read_text())["devices"][topic.split("/")[1]]
        assert saved["request"] == body["id"]  # saved before it was sent
        self.requests.append(body)
        kind = body.get("action", "install")
        self.sim.answer(Action(kind, topic.split("/")[1], body["id"]))

    def publish_many(
        self, messages: list[tuple[str, bytes]], qos: int = 1, retain: bool = False
    ) -> None:
        for topic, payload in messages:
            self.publish(topic, payload, qos, retain)


def test_the_runner_saves_then_sends_and_mirrors_its_progress(tmp_path: Path) -> None:
    from sensorcast.agent.fleet.rollout import Bundle, Runner

    ids = ["a", "b"]
    plan, sim = _plan(ids, (50, 100)), Sim(ids)
    state = tmp_path / "state.json"
    link = _Link(sim, state)
    runner = Runner(
        link, plan, state, POLICY, Bundle(b"model", "c2ln"), "p", clock=lambda: link.now
    )
    assert runner.run() == 0
    install, promote = link.requests[0], link.requests[1]
    assert install == {"stream": "room", "sha256": SHA, "data": "bW9kZWw=", "shadow": True,
                       "signature": "c2ln", "id": f"r1:{plan.cohorts[0][0]}:install"}  # fmt: skip
    assert promote == {"stream": "room", "sha256": SHA, "action": "promote",
                       "id": f"r1:{plan.cohorts[0][0]}:promote"}  # fmt: skip
    assert json.loads(state.read_text())["status"] == "done"
    assert link.progress[-1]["status"] == "done" and link.progress[-1]["id"] == "r1"
    assert {d["step"] for d in link.progress[-1]["devices"].values()} == {"promoted"}
    # Unsigned: no signature field at all.
    plan, sim = _plan(["c"], (100,)), Sim(["c"])
    link = _Link(sim, state)
    Runner(link, plan, state, POLICY, Bundle(b"m", None), "p", clock=lambda: link.now).run()
    assert "signature" not in link.requests[0]
