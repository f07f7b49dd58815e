"""A rollout's report: a table per device (or JSON), what happened to the rollout as a whole,
and the exit code it ends with."""

from __future__ import annotations

import json
from typing import Any

from sensorcast.agent.fleet.plan import (
    DONE,
    INCOMPLETE,
    OFFLINE,
    PENDING,
    PROMOTED,
    STOPPED_ALL,
    Plan,
)

__all__ = ["render_json", "render_table", "summary"]

_NEXT = {
    DONE: "promoted everywhere",
    STOPPED_ALL: "stopped by the gate: live models kept where it was not promoted",
    INCOMPLETE: "incomplete: rerun the same command to resume the devices left",
}


def _ratio(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.3f}"


def _reason(plan: Plan, device: str) -> str:
    rec = plan.devices[device]
    parts = [p for p in (rec.reason, rec.note) if p]
    if rec.step == PENDING and plan.status == STOPPED_ALL:
        parts.append("not started: the rollout stopped before its wave")
    elif rec.step == PROMOTED and plan.status == STOPPED_ALL and rec.wave < _stopped_wave(plan):
        parts.append("stays promoted (an earlier wave)")
    if rec.shadow_dropped:
        parts.append("shadow dropped")
    return "; ".join(parts)


def _stopped_wave(plan: Plan) -> int:
    for wave, cohort in enumerate(plan.cohorts):
        if any(plan.devices[d].failed or plan.devices[d].step == "stopped" for d in cohort):
            return wave
    return len(plan.cohorts)


def summary(plan: Plan) -> str:
    """One line: the rollout, its status and what happens next."""
    counts: dict[str, int] = {}
    for rec in plan.devices.values():
        counts[rec.step] = counts.get(rec.step, 0) + 1
    tally = ", ".join(f"{n} {step}" for step, n in sorted(counts.items()))
    head = f"rollout {plan.id}: {plan.label} on stream {plan.stream}: {plan.status}"
    why = f" ({plan.reason})" if plan.reason else ""
    return f"{head}{why}; {tally}; {_NEXT.get(plan.status, 'running')}"


def render_table(plan: Plan) -> str:
    """The report as text: one row per device, in wave order."""
    rows = [("DEVICE", "WAVE", "STEP", "MAE_RATIO", "REASON")]
    for cohort in plan.cohorts:
        for device in cohort:
            rec = plan.devices[device]
            ratio = _ratio(rec.measured.get("mae_ratio"))
            rows.append((device, str(rec.wave + 1), rec.step, ratio, _reason(plan, device)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4] for r in rows]
    offline = [d for d, r in plan.devices.items() if r.step == OFFLINE]
    if offline:
        then = "to resume" if plan.status == INCOMPLETE else "not rolled out"
        lines.append(f"offline, {then}: {', '.join(sorted(offline))}")
    return "\n".join([*(line.rstrip() for line in lines), summary(plan)])


def render_json(plan: Plan, code: int) -> str:
    """The report as JSON: the whole plan, with ``exit`` and ``summary``."""
    body = plan.to_json()
    body.update({"exit": code, "summary": summary(plan)})
    return json.dumps(body, indent=2, sort_keys=True)
