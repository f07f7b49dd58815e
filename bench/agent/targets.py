"""The targets table: issue 18's six targets against this run's figures (the after tree),
then issue 7's that no issue 18 target replaced (ingest, windowing, batching, start-up).

Each question module gives its own rows (``targets(r)``: what, figure, met); target 1
(the compute path) is read here from :mod:`bench.agent.path`'s stages. Only questions that
ran contribute rows.
"""

from __future__ import annotations

from typing import Any, Optional

from bench.agent.report import question, ran
from bench.harness.markdown import fr, ratio, table

__all__ = ["COMPUTE_PATH", "Target", "issue7", "issue18", "render"]

#: (what, this run's figure, met: True/False/None for unknown or report only)
Target = tuple[str, str, Optional[bool]]

#: Target 1: the compute path (the 'no outbox' stage) / bare invoke, per model.
COMPUTE_PATH = {"lstm": 1.25, "demo": 1.5}
#: Where each question's rows go, in issue 18's order (6 is int8 vs float32).
ISSUE_18 = ("outside", "many", "idle", "memory", "modes")


def _compute_path(r: dict[str, Any]) -> list[Target]:
    """Target 1, met on the wall-time ratio (as the issue measured it); the process CPU-time
    ratio, which the machine's other work disturbs less, next to it."""
    from bench.agent.path import stages

    rows: list[Target] = []
    for key, limit in COMPUTE_PATH.items():
        if key not in r.get("path", {}):
            continue
        c = stages(r, key, "after")
        cpu = ratio(c.get("agent_compute"), c.get("bare_invoke"), "cpu_us")
        wall = ratio(c.get("agent_compute"), c.get("bare_invoke"))
        label = r.get("models", {}).get(key, key)
        rows.append(
            (
                f"1. compute path (parse -> window -> forecast -> payload) <= {limit}x bare "
                f"invoke: {label}",
                f"{fr(wall)} (CPU time {fr(cpu)})",
                None if wall is None else wall <= limit,
            )
        )
    return rows


def issue18(r: dict[str, Any]) -> list[Target]:
    """Issue 18's rows, from the questions that ran."""
    done = ran(r)
    rows = _compute_path(r) if "path" in done else []
    for name in ISSUE_18:
        module = question(name) if name in done else None
        if module is not None and hasattr(module, "targets"):
            rows += module.targets(r)
    return rows


def _ingest(r: dict[str, Any]) -> list[Target]:
    v = ((r.get("ingest") or {}).get("after") or {}).get("per_s")
    w = ((r.get("window") or {}).get("after") or {}).get("window_add", {}).get("per_s")
    return [
        (
            ">= 20,000 readings/s through Mosquitto, one core",
            f"{v:,.0f}/s" if v else "-",
            None if v is None else v >= 20_000,
        ),
        (
            "windowing >= 1,000,000 readings/s in process",
            f"{w:,.0f}/s" if w else "-",
            None if w is None else w >= 1e6,
        ),
    ]


def _batching(r: dict[str, Any]) -> list[Target]:
    from bench.agent.batching import results

    return [
        (
            f"100 streams batched >= 5x per-stream: {d['model']}",
            f"{d['speedup']:.1f}x",
            d["speedup"] >= 5,
        )
        for d in results(r)
    ]


def _startup(r: dict[str, Any]) -> list[Target]:
    return [
        (f"start-up < 0.5 s: {key}", f"{d.get('s', 0):.3f} s", d["s"] < 0.5 if "s" in d else None)
        for key, d in (r.get("startup") or {}).items()
        if key.startswith("sensorcast run") and "after" in key
    ]


def issue7(r: dict[str, Any]) -> list[Target]:
    """Issue 7's rows that still stand (its per-forecast and memory targets are replaced)."""
    done = ran(r)
    rows = _ingest(r) if "ingest" in done else []
    rows += _batching(r) if "batching" in done else []
    return rows + (_startup(r) if "startup" in done else [])


def _met(ok: Optional[bool]) -> str:
    return "?" if ok is None else ("yes" if ok else "**no**")


def render(r: dict[str, Any]) -> list[str]:
    """The targets tables: issue 18's, then issue 7's still standing."""
    out = ["## Targets", ""]
    for title, rows in (("issue 18", issue18(r)), ("issue 7, still standing", issue7(r))):
        if rows:
            out += table(
                [f"target ({title})", "this run, after", "met"],
                ([what, got, _met(ok)] for what, got, ok in rows),
            )
            out.append("")
    out += ["'?': not measured in this run, or reported only.", ""] if len(out) > 2 else []
    return out
