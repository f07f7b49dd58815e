"""``python -m bench.anomaly [--faults N] [--seed S]``: the anomaly detector on the demo's 30 days
of room data, as a markdown section: false alarms on clean data (and on the temperature rounded
to a sensor's 0.1 C), and detection delays for faults injected at random periods."""

from __future__ import annotations

import argparse
import collections
from typing import Optional

import numpy as np

from bench.anomaly.replay import Replay, detector, fault_delays, load_room, quantize


def _delays(found: list[Optional[int]]) -> str:
    hit = sorted(d for d in found if d is not None)
    if not hit:
        return f"0/{len(found)} raised"
    return f"{len(hit)}/{len(found)} raised; delay median {np.median(hit):g}, max {hit[-1]} periods"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.anomaly", description=__doc__)
    parser.add_argument("--faults", type=int, default=30, help="faults of each kind")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--band", choices=("agent", "fixed"), default="agent",
        help="the agent's adaptive band (QualityTracker) or a fixed split-conformal one",
    )  # fmt: skip
    args = parser.parse_args(argv)
    ts, rows = load_room()
    rp = Replay(ts, rows, band=args.band)
    sigma = float(rp.q[1] - rp.q[0]) / (2 * 1.2816)
    days = len(rows) * rp.period_s / 86400
    print(f"## Anomalies ({days:.0f} days of room data, {rp.period_s:g} s periods)\n")
    print(f"Band: {args.band} at 80 %. Step-0 residual quantiles of the first {rp.calib} ", end="")
    print(f"periods: [{rp.q[0]:+.3f}, {rp.q[1]:+.3f}] C (sigma {sigma:.3f} C, the fault ", end="")
    print(f"sizes' unit); target std {rp.target_std:.3f} C.\n")
    print("| data | anomalies started (by reason) |\n|---|---|")
    rounded = quantize(rows)
    for name, data, fc in (("clean", rows, rp.fc), ("rounded to 0.1 C", rounded, None)):
        starts = rp.run(data, rp.forecasts(data) if fc is None else fc, detector()).starts()
        reasons = collections.Counter(p["reason"] for _, p in starts)
        print(f"| {name} | {len(starts)} ({', '.join(f'{k} {v}' for k, v in reasons.items())}) |")
    rng = np.random.default_rng(args.seed)
    at = sorted(rng.integers(rp.calib, len(rows) - 200, args.faults).tolist())
    print("\n| fault (36 periods) | detection (periods after its first period closed) |\n|---|---|")
    cases = [
        ("step of 3 x target std", "step", None),
        ("step of 5 residual sigma", "step", 5 * sigma),
        ("step of 3 residual sigma", "step", 3 * sigma),
        ("stuck (6th equal reading = 4)", "stuck", None),
        ("dropout of the target", "dropout", None),
        ("silence (every feature)", "silence", None),
    ]
    for label, kind, size in cases:
        print(f"| {label} | {_delays(fault_delays(rp, kind, at, size=size))} |")
    return 0


raise SystemExit(main())
