"""Entry script of the forecast-quality benchmark: see :mod:`bench.quality`.

Run from the repository root: ``.venv/bin/python bench/quality_bench.py`` writes
bench/RESULTS-quality.md (about 20 s); ``--quick`` replays the demo room only.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a file, Python put bench/ first on sys.path: the checkout goes there instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    from bench.quality.cli import main

    raise SystemExit(main())
