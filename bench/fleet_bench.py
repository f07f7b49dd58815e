"""The fleet benchmark (issue 17): ``sensorcast fleet status`` and one rollout decision over
1,000 simulated devices on one real Mosquitto -> bench/RESULTS-fleet.md.

    bench/run fleet                      # about 2-3 min here
    .venv/bin/python bench/fleet_bench.py --devices 200 --no-rollout

The benchmark is bench/fleet/ (shapes, sim, measure, report, cli).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the checkout, not bench/, first on sys.path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.fleet.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
