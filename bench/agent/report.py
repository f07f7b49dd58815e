"""``bench/RESULTS.md`` from a run's results (``results.json``): header, targets, sections.

Each question renders its own section; this module puts them in order, with the machine
and the run's settings first and, last, the notes on what was changed to close the gaps
(``bench/agent/notes.md``, kept with the figures; module paths there are as they were then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.agent import (
    alternatives,
    batching,
    ingest,
    instructions,
    memory,
    path,
    qemu,
    startup,
    targets,
)

__all__ = ["render"]

NOTES = Path(__file__).with_name("notes.md")


def _header(r: dict[str, Any]) -> list[str]:
    quick = " --quick" if r.get("quick") else ""
    st = r.get("settings")
    rounds = (
        f"; per-forecast and windowing timings: {st.get('turns', 1)} children per side, taking "
        f"turns with the other side's, of {st['rounds']} rounds of {st['n']:,} calls each "
        "(their rounds pooled)"
        if st
        else ""
    )
    before = r.get("before", {"package": "agent", "rev": r.get("baseline_rev", "?")})
    return [
        "# Agent benchmark results",
        "",
        f"Run by `bench/run{quick}` (`bench/agent/`) on {r['started']} in "
        f"{r['elapsed_s'] / 60:.1f} min. Figures, not pass/fail.",
        "",
        *r["host"],
        f"- load average (1, 5, 15 min) at start: {r['load_start']}; at end: {r['load_end']}. "
        "The machine is shared with other work: timings are the **median of several rounds**, "
        "with the spread (min-max of the rounds) in brackets.",
        f"- before = the `agent/` of `{r.get('baseline', '?')}` ({before['rev']}, imported as "
        f"`{before['package']}`); after = this checkout's `agent/` (copied at the start of the "
        "run, imported as `sensorcast.agent`); measured in the same run. Items 3 and 6 use the "
        "after tree only.",
        *(f"- {line}" for line in r.get("remeasured", [])),
        f"- times in microseconds (µs) per call unless marked{rounds}.",
        "",
    ]


def _failures(r: dict[str, Any]) -> list[str]:
    if not r.get("failures"):
        return []
    return ["", "## Failures in this run", "", *(f"- {f}" for f in r["failures"])]


def render(r: dict[str, Any]) -> str:
    """The whole results file."""
    lines = [*_header(r), *targets.render(r)]
    for question in (path, instructions, ingest, batching, memory, startup, alternatives, qemu):
        lines += question.render(r)
    lines += ["## Closing the gaps (issue 7)", "", *NOTES.read_text().splitlines()]
    lines += _failures(r)
    return "\n".join(lines) + "\n"
