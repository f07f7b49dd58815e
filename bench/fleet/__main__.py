"""``python -m bench.fleet``: the fleet benchmark."""

from __future__ import annotations

from bench.fleet.cli import main

raise SystemExit(main())
