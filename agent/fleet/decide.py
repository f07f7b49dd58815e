"""The rollout's decisions: pure and fast. :func:`decide` takes the plan, what the fleet's
retained messages say now and the time, moves every device's record on (the plan is updated
in place) and returns the requests to send. No I/O: the runner sends, saves and waits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sensorcast.agent.fleet.gate import Condition, failures, measure
from sensorcast.agent.fleet.model import Device, Fleet, sha_of_label
from sensorcast.agent.fleet.plan import (
    DONE,
    DROPPING,
    FAILED,
    FINAL,
    INCOMPLETE,
    OFFLINE,
    PASSED,
    PENDING,
    PROMOTE_SENT,
    PROMOTED,
    RUNNING,
    SHADOW_SENT,
    SOAKING,
    STOPPED,
    STOPPED_ALL,
    STOPPING,
    DeviceRecord,
    Plan,
)

__all__ = ["Action", "Policy", "decide"]

_SETTLED = frozenset({PASSED, PROMOTED, FAILED, STOPPED, OFFLINE})


@dataclass(frozen=True)
class Action:
    """A request to send: ``kind`` is ``install`` (as shadow), ``promote`` or
    ``drop_shadow``; ``id`` is the request id the device echoes on its model/state."""

    kind: str
    device: str
    id: str


@dataclass(frozen=True)
class Policy:
    """How long to wait for what (seconds), and the gate."""

    gate: Sequence[Condition]
    timeout_s: float = 30.0  #: For a device's answer to a request (then it is sent again).
    offline_wait_s: float = 600.0  #: For an offline device to come back (then reported).


class _Ctx:
    def __init__(self, plan: Plan, fleet: Fleet, now: float, policy: Policy) -> None:
        self.plan, self.fleet, self.now, self.policy = plan, fleet, now, policy
        self.sha12 = plan.sha256[:12]
        self.actions: list[Action] = []

    def send(self, rec: DeviceRecord, kind: str, step: str) -> None:
        if rec.step != step:
            rec.step, rec.since, rec.attempts = step, self.now, 0
        rec.request = f"{self.plan.id}:{rec.id}:{kind}"
        rec.sent_at, rec.attempts = self.now, rec.attempts + 1
        self.actions.append(Action(kind, rec.id, rec.request))

    def fail(self, rec: DeviceRecord, reason: str, after: str = FAILED) -> None:
        """Fail (or stop) ``rec``: its shadow is dropped, then it ends in ``after``."""
        rec.reason, rec.after_drop, rec.soak_start = reason, after, None
        self.send(rec, "drop_shadow", DROPPING)

    def ours(self, label: Optional[str]) -> bool:
        return sha_of_label(label) == self.sha12

    def answer(self, rec: DeviceRecord, dev: Device) -> Optional[dict[str, Any]]:
        """The device's model/state if it answers ``rec``'s last request."""
        state = dev.model_state
        if isinstance(state, dict) and rec.request is not None and state.get("id") == rec.request:
            return state
        return None

    def away(self, rec: DeviceRecord, dev: Optional[Device]) -> bool:
        """Whether the device is away now (offline, unknown, behind a down bridge); gives it
        up as ``offline`` after --offline-wait."""
        if dev is not None and self.fleet.reachable(dev):
            if rec.offline_since is not None:  # back: what it may have missed goes again now
                rec.offline_since, rec.sent_at = None, 0.0
            return False
        if rec.offline_since is None:
            rec.offline_since = self.now
        if self.now - rec.offline_since >= self.policy.offline_wait_s:
            state = "never seen" if dev is None else self.fleet.state(dev)
            rec.step, rec.since, rec.soak_start = OFFLINE, self.now, None
            rec.reason = f"{state} for {self.now - rec.offline_since:.0f} s (resume later)"
        return True

    def overdue(self, rec: DeviceRecord, kind: str) -> None:
        """No answer yet: send again after --timeout; give up after --offline-wait."""
        if self.now - rec.sent_at < self.policy.timeout_s:
            return
        if self.now - rec.since >= self.policy.offline_wait_s:
            rec.step, rec.since = OFFLINE, self.now
            rec.reason = f"online but never answered {rec.attempts} {kind} requests"
            return
        self.send(rec, kind, rec.step)


def _live_sha_ours(ctx: _Ctx, dev: Optional[Device]) -> bool:
    if dev is None:
        return False
    stream = dev.streams.get(ctx.plan.stream)
    return stream is not None and ctx.ours(stream.model)


def _pending(ctx: _Ctx, rec: DeviceRecord, dev: Optional[Device]) -> None:
    if ctx.away(rec, dev) or dev is None:
        return
    if _live_sha_ours(ctx, dev):
        rec.step, rec.since, rec.note = PROMOTED, ctx.now, "already live"
        return
    rec.started = dev.started
    ctx.send(rec, "install", SHADOW_SENT)


def _shadow_sent(ctx: _Ctx, rec: DeviceRecord, dev: Optional[Device]) -> None:
    if ctx.away(rec, dev) or dev is None:
        return
    state = ctx.answer(rec, dev)
    if state is not None and state.get("status") == "rejected":
        ctx.fail(rec, f"shadow rejected: {state.get('reason', 'no reason given')}")
        return
    stream = dev.stream(ctx.plan.stream)
    if state is not None and ctx.ours(stream.shadow):
        rec.step, rec.since, rec.soak_start, rec.started = SOAKING, ctx.now, ctx.now, dev.started
        return
    if state is not None and ctx.now - rec.sent_at >= ctx.policy.timeout_s:
        ctx.fail(rec, f"shadow installed but not running (its shadow: {stream.shadow})")
        return
    if state is None:
        ctx.overdue(rec, "install")


def _soaking(ctx: _Ctx, rec: DeviceRecord, dev: Optional[Device]) -> None:
    if dev is not None and rec.started is not None and dev.started != rec.started:
        ctx.fail(rec, "restarted during soak (the agent's start time changed)")
        return
    if ctx.away(rec, dev) or dev is None:
        rec.soak_start = None  # online throughout: the soak starts over once it is back
        return
    stream = dev.stream(ctx.plan.stream)
    if ctx.ours(stream.model):
        rec.step, rec.since, rec.note = PROMOTED, ctx.now, "promoted by the device itself"
        return
    if not ctx.ours(stream.shadow):
        ctx.fail(rec, f"its shadow is now {stream.shadow or 'gone'}, not this bundle")
        return
    if rec.soak_start is None:
        rec.soak_start = ctx.now
    end = rec.soak_start + ctx.plan.soak_s
    if ctx.now < end:
        return
    quality = stream.quality or {}
    late = ctx.now >= end + ctx.policy.timeout_s  # no fresher report: judge what there is
    if not late and (stream.quality_time is None or stream.quality_time < end):
        return
    _judge(ctx, rec, quality, late)


def _judge(ctx: _Ctx, rec: DeviceRecord, quality: dict[str, Any], late: bool) -> None:
    shadow = quality.get("shadow")
    if not isinstance(shadow, dict) or not ctx.ours(shadow.get("model")):
        if late:
            ctx.fail(rec, "no quality report on this bundle's shadow after the soak")
        return
    rec.measured = {c.metric: measure(c.metric, quality) for c in ctx.policy.gate}
    rec.measured["mae_ratio"] = measure("mae_ratio", quality)
    if rec.measured["mae_ratio"] is None:
        if late:
            ctx.fail(rec, "too few residuals to compare (mae_ratio null): lengthen --soak")
        return
    why = failures(ctx.policy.gate, quality)
    if shadow.get("drift") is True:
        why.insert(0, "shadow drifting")
    if why:
        ctx.fail(rec, "; ".join(why))
    else:
        rec.step, rec.since = PASSED, ctx.now


def _promote_sent(ctx: _Ctx, rec: DeviceRecord, dev: Optional[Device]) -> None:
    if _live_sha_ours(ctx, dev):
        rec.step, rec.since = PROMOTED, ctx.now
        return
    if ctx.away(rec, dev) or dev is None:
        return
    state = ctx.answer(rec, dev)
    if state is not None and state.get("status") == "rejected":
        ctx.fail(rec, f"promote rejected: {state.get('reason', 'no reason given')}")
    elif state is None or ctx.now - rec.sent_at >= ctx.policy.timeout_s:
        ctx.overdue(rec, "promote")


def _dropping(ctx: _Ctx, rec: DeviceRecord, dev: Optional[Device]) -> None:
    state = None if dev is None else ctx.answer(rec, dev)
    if state is not None:
        rec.step, rec.since = rec.after_drop, ctx.now
        rec.shadow_dropped = state.get("status") == "applied"
        if not rec.shadow_dropped:
            rec.note = f"drop_shadow rejected: {state.get('reason', 'no reason given')}"
        return
    if dev is None or not ctx.fleet.reachable(dev):
        if ctx.now - rec.since >= ctx.policy.offline_wait_s:
            rec.step, rec.shadow_dropped = rec.after_drop, False
            rec.note = "shadow not dropped: the device stayed offline"
        return
    if ctx.now - rec.sent_at >= ctx.policy.timeout_s:
        ctx.send(rec, "drop_shadow", DROPPING)


_STEPS: dict[str, Callable[[_Ctx, DeviceRecord, Optional[Device]], None]] = {
    PENDING: _pending, SHADOW_SENT: _shadow_sent, SOAKING: _soaking,
    PROMOTE_SENT: _promote_sent, DROPPING: _dropping,
}  # fmt: skip


def _verdict(ctx: _Ctx, wave: int, records: list[DeviceRecord]) -> None:
    """Once every device of the wave is settled: stop if too many failed, else promote the
    ones that passed."""
    if any(r.step not in _SETTLED for r in records):
        return
    failed = sum(r.failed for r in records)
    plan = ctx.plan
    if failed > plan.max_failed * len(records):
        plan.status = STOPPING
        plan.reason = (
            f"wave {wave + 1}: {failed} of {len(records)} devices failed the gate "
            f"(more than --max-failed {plan.max_failed:g})"
        )
        for rec in records:
            if rec.step == PASSED:
                ctx.fail(rec, "passed, but its wave failed", after=STOPPED)
        return
    for rec in records:
        if rec.step == PASSED:
            ctx.send(rec, "promote", PROMOTE_SENT)


def decide(plan: Plan, fleet: Fleet, now: float, policy: Policy) -> list[Action]:
    """Move the rollout on; returns the requests to send now (the plan is updated)."""
    ctx = _Ctx(plan, fleet, now, policy)
    if plan.finished:
        return []
    for wave, cohort in enumerate(plan.cohorts):
        records = [plan.devices[d] for d in cohort]
        for rec in records:
            handler = _STEPS.get(rec.step)
            if handler is not None and (plan.status == RUNNING or rec.step != PENDING):
                handler(ctx, rec, fleet.devices.get(rec.id))
        if plan.status == RUNNING:
            _verdict(ctx, wave, records)
        if any(r.step not in FINAL for r in records):
            break  # the next wave waits for this one
    _finish(plan, now)
    return ctx.actions


def _finish(plan: Plan, now: float) -> None:
    records = plan.devices.values()
    plan.updated_at = now
    if plan.status == STOPPING:
        if not any(r.step == DROPPING for r in records):
            plan.status = STOPPED_ALL
    elif all(r.step in FINAL for r in records):
        plan.status = INCOMPLETE if any(r.step == OFFLINE for r in records) else DONE
