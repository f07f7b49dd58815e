"""The targets of issue 7 against this run's figures (the after tree)."""

from __future__ import annotations

from typing import Any, Optional

from bench.agent.batching import results as batch_results
from bench.agent.path import stages
from bench.harness.markdown import fr, mb, ratio, table

__all__ = ["render"]

#: (what, this run's figure, met: True/False/None for unknown)
Target = tuple[str, str, Optional[bool]]


def _path(r: dict[str, Any]) -> list[Target]:
    rows: list[Target] = []
    for key, label in r["models"].items():
        c = stages(r, key, "after")
        x = ratio(c.get("agent_path"), c.get("bare_invoke"))
        rows.append(
            (
                f"1. whole path <= 1.25x bare invoke: {label}",
                fr(x),
                None if x is None else x <= 1.25,
            )
        )
    return rows


def _ingest(r: dict[str, Any]) -> list[Target]:
    v = ((r.get("ingest") or {}).get("after") or {}).get("per_s")
    w = ((r.get("window") or {}).get("after") or {}).get("window_add", {}).get("per_s")
    return [
        (
            "2. >= 20,000 readings/s through Mosquitto, one core",
            f"{v:,.0f}/s" if v else "-",
            None if v is None else v >= 20_000,
        ),
        (
            "2. windowing >= 1,000,000 readings/s in process",
            f"{w:,.0f}/s" if w else "-",
            None if w is None else w >= 1e6,
        ),
    ]


def _batch_memory_startup(r: dict[str, Any]) -> list[Target]:
    rows: list[Target] = [
        (
            f"3. 100 streams batched >= 5x per-stream: {d['model']}",
            f"{d['speedup']:.1f}x",
            d["speedup"] >= 5,
        )
        for d in batch_results(r)
    ]
    for d in (r.get("memory") or {}).values():
        peak = (d.get("after") or {}).get("peak_mb")
        rows.append(
            (
                f"4. peak RSS <= 55 MB: {d['runtime']}, {d['bundle']}",
                f"{mb(peak)} MB",
                None if peak is None else peak <= 55,
            )
        )
    for key, d in (r.get("startup") or {}).items():
        if key.startswith("sensorcast run") and "after" in key:
            rows.append(
                (
                    f"5. start-up < 0.5 s: {key}",
                    f"{d.get('s', 0):.3f} s",
                    d["s"] < 0.5 if "s" in d else None,
                )
            )
    return rows


def _met(ok: Optional[bool]) -> str:
    return "?" if ok is None else ("yes" if ok else "**no**")


def render(r: dict[str, Any]) -> list[str]:
    """The targets table."""
    rows = [*_path(r), *_ingest(r), *_batch_memory_startup(r)]
    return [
        "## Targets",
        "",
        *table(
            ["target (issue 7)", "this run, after", "met"],
            ([what, got, _met(ok)] for what, got, ok in rows),
        ),
        "",
    ]
