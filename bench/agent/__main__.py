"""``python -m bench.agent``: the same as ``bench/run``."""

from __future__ import annotations

from bench.agent.cli import main

raise SystemExit(main())
