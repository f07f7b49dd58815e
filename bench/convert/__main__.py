"""``python -m bench.convert``: the same as ``bench/convert_bench.py``."""

from __future__ import annotations

from bench.convert.cli import main

raise SystemExit(main())
