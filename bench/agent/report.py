"""``bench/RESULTS.md`` from a run's results (``results.json``): header, targets, sections.

Each question renders its own section; this module names the questions and their order
(:data:`QUESTIONS`), numbers their sections in that order, puts the machine and the run's
settings first and, last, the notes on what was changed to close the gaps: issue 18's
(``bench/agent/notes-18.md``), then issue 7's (``bench/agent/notes.md``, kept as history;
module paths there are as they were then).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

__all__ = ["QUESTIONS", "question", "ran", "render"]

#: The questions (modules of ``bench.agent``), in the order they run and render: issue 18's
#: targets 1-6 first, then issue 7's other questions.
QUESTIONS = (
    "path",
    "outside",
    "many",
    "idle",
    "memory",
    "modes",
    "ingest",
    "batching",
    "startup",
    "flame",
    "instructions",
    "alternatives",
    "qemu",
)
#: What a results file from before ``ran`` was recorded holds.
LEGACY_RAN = ("path", "instructions", "ingest", "batching", "memory", "startup", "alternatives")

NOTES_18 = Path(__file__).with_name("notes-18.md")
NOTES_7 = Path(__file__).with_name("notes.md")
_HEADING = re.compile(r"^## \d+[a-z]?\. ")


def question(name: str) -> Optional[ModuleType]:
    """The question's module, or None if this checkout does not have it (yet)."""
    full = f"bench.agent.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if exc.name == full:
            return None
        raise


def ran(r: dict[str, Any]) -> list[str]:
    """The questions that ran and answered, in :data:`QUESTIONS` order."""
    done = r.get("ran")
    if done is None:
        done = [*LEGACY_RAN, *(["qemu"] if r.get("qemu") else [])]
    return [name for name in QUESTIONS if name in done]


def _header(r: dict[str, Any]) -> list[str]:
    quick = " --quick" if r.get("quick") else ""
    only = f" --only {','.join(r['only'])}" if r.get("only") else ""
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
        f"Run by `bench/run{quick}{only}` (`bench/agent/`) on {r['started']} in "
        f"{r['elapsed_s'] / 60:.1f} min. Figures, not pass/fail.",
        "",
        *r["host"],
        f"- load average (1, 5, 15 min) at start: {r['load_start']}; at end: {r['load_end']}. "
        "The machine is shared with other work: timings are the **median of several rounds**, "
        "with the spread (min-max of the rounds) in brackets.",
        f"- before = the `agent/` of `{r.get('baseline', '?')}` ({before['rev']}, imported as "
        f"`{before['package']}`); after = this checkout's `agent/` (copied at the start of the "
        "run, imported as `sensorcast.agent`); measured in the same run. A section without "
        "a before column measured the after tree only.",
        *(f"- {line}" for line in r.get("remeasured", [])),
        f"- times in microseconds (µs) per call unless marked{rounds}.",
        *_minutes(r),
        "",
    ]


def _minutes(r: dict[str, Any]) -> list[str]:
    took = r.get("minutes") or {}
    if not took:
        return []
    return ["- minutes per question: " + ", ".join(f"{k} {v:.1f}" for k, v in took.items())]


def _numbered(lines: list[str], number: int) -> list[str]:
    """A section with its first ``## `` heading numbered ``number`` (in place of its own)."""
    for i, line in enumerate(lines):
        if line.startswith("## "):
            title = _HEADING.sub("", line).removeprefix("## ")
            return [*lines[:i], f"## {number}. {title}", *lines[i + 1 :]]
    return lines


def _notes() -> list[str]:
    out = []
    for title, notes in (("issue 18", NOTES_18), ("issue 7", NOTES_7)):
        if notes.exists():
            out += [f"## Closing the gaps ({title})", "", *notes.read_text().splitlines(), ""]
    return out


def _failures(r: dict[str, Any]) -> list[str]:
    if not r.get("failures"):
        return []
    return ["## Failures in this run", "", *(f"- {f}" for f in r["failures"]), ""]


def render(r: dict[str, Any]) -> str:
    """The whole results file: only the sections of the questions that ran."""
    from bench.agent import targets

    lines = [*_header(r), *targets.render(r)]
    number = 0
    for name in ran(r):
        module = question(name)
        section = module.render(r) if module is not None else []
        if section:
            number += 1
            lines += _numbered(section, number)
    lines += _notes()
    lines += _failures(r)
    return "\n".join(lines).rstrip("\n") + "\n"
