#!/usr/bin/env python3
"""Converter benchmark: size, error and speed of every way sensorcast can convert an LSTM.

Run from the repository root:

    .venv/bin/python bench/convert_bench.py            # the 9-point grid, ~15-25 min on 2 cores
    .venv/bin/python bench/convert_bench.py --quick    # 2 small points, a smoke run

It writes ``bench/RESULTS-convert.md``; see ``bench/README.md`` for what is measured and how.
The benchmark is the package ``bench.convert`` on ``bench.harness``; this file is its entry
script and that of its child processes (``--child KIND SPEC.json``), also under the
tflite-runtime venv.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a file, Python put bench/ first on sys.path: the checkout goes there instead,
    # so `bench` imports as a package (and bench/convert cannot pass for a top-level one).
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    from bench.convert.cli import main

    raise SystemExit(main())
