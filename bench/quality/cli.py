"""``python bench/quality_bench.py``: replay, score, write RESULTS-quality.md."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
from sensorcast.agent.forecast.manifest import read_bundle

from bench.harness.machine import git_commit, host_summary
from bench.harness.paths import REPO
from bench.quality import report
from bench.quality.faults import Fault, inject, starts
from bench.quality.plot import plot_band
from bench.quality.replay import replay
from bench.quality.score import Truth, alarms, coverage_skill, delays, residual_sigma
from bench.quality.series import SERIES, Series, load

__all__ = ["main"]

FAULTS = 8  #: Faults of each kind per series.
FAULT_PERIODS = 12  #: How long each lasts, periods.
WARMUP_PERIODS = 48  #: Clean periods before the first fault (the window fills, the band settles).
STEP_SIGMAS = 3.0  #: Step faults: this many stds (of the next-step residual; of the series).


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quality_bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="the demo room only (smoke run)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS-quality.md")
    p.add_argument("--json", type=Path, help="also write every figure as JSON here")
    p.add_argument("--render-from", type=Path, help="render --out from this JSON, no replay")
    p.add_argument("--plot", type=Path, help="draw the agent's band on the first series' "
                   "replay into this PNG (docs/img/agent-band.png; needs matplotlib)")  # fmt: skip
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.render_from is not None:
        args.out.write_text(report.render(json.loads(args.render_from.read_text())))
        return 0
    names = ["room"] if args.quick else ["weather", "room"]
    results: dict[str, Any] = {
        "host": host_summary(),
        "commit": git_commit(["agent", "examples", "bench/quality"]),
        "command": " ".join(
            ["python bench/quality_bench.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "series": {},
    }
    for i, name in enumerate(names):
        results["series"][name] = measure(SERIES[name], args.plot if i == 0 else None)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    args.out.write_text(report.render(results))
    print(f"wrote {args.out}")
    return 0


def measure(series: Series, plot: Optional[Path] = None) -> dict[str, Any]:
    """The clean replay's coverage, skill and false alarms; each fault kind's delays."""
    started = time.monotonic()
    manifest = read_bundle(series.bundle).manifest
    period = manifest.period_s
    ts, values = load(series)
    target = series.features.index(series.target)
    full_ts, full = load(replace(series, start_ts=-math.inf))  # seasonal baseline, truth
    truth = Truth(full_ts, full[:, target], period)
    clean = replay(series.bundle, ts, values)
    out: dict[str, Any] = {
        "note": series.note,
        "bundle": str(series.bundle.relative_to(REPO)),
        "model": manifest_label(clean.forecasts),
        "period_s": period,
        "horizon": manifest.horizon,
        "rows": len(ts),
        "from": time.strftime("%Y-%m-%d", time.gmtime(ts[0])),
        "to": time.strftime("%Y-%m-%d", time.gmtime(ts[-1])),
        "quality": coverage_skill(clean.forecasts, truth),
        "tracker": clean.tracker,
        "counters": clean.counters,
        "false_alarms": alarms(clean.anomalies, ts),
    }
    if plot is not None:
        cov = out["quality"]["coverage"]
        title = f"{series.name}: what the agent published ({cov:.1%} inside the 80 % band)"
        plot_band(plot, title, clean.forecasts, truth)
    sigma = residual_sigma(clean.forecasts, truth)
    series_std = float(np.std(values[:, target]))
    out["residual_sigma"], out["series_std"] = sigma, series_std
    at = starts(len(ts), FAULTS, WARMUP_PERIODS, FAULT_PERIODS)
    kinds = {
        "step (3 sigma of the next-step error)": ("step", STEP_SIGMAS * sigma),
        "step (3 std of the series)": ("step", STEP_SIGMAS * series_std),
        "stuck": ("stuck", 0.0),
        "dropout": ("dropout", 0.0),
    }
    out["faults"] = {}
    for label, (kind, size) in kinds.items():
        faults = [Fault(kind, s, FAULT_PERIODS, size) for s in at]
        run = replay(series.bundle, ts, inject(values, target, faults))
        out["faults"][label] = delays(run.anomalies, faults, ts, period)
    out["seconds"] = time.monotonic() - started
    print(f"{series.name}: {out['seconds']:.0f} s")
    return out


def manifest_label(forecasts: list[dict[str, Any]]) -> str:
    return str(forecasts[0]["model"]) if forecasts else "-"
