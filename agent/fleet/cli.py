"""``sensorcast fleet status`` and ``sensorcast fleet rollout``: the parser, the broker
connection flags both share, and the exit codes. (Contract stub: helper D fills it in.)"""

from __future__ import annotations

import sys
from typing import Optional

__all__ = ["main"]


def main(argv: Optional[list[str]] = None) -> int:
    """``sensorcast fleet ARGS``; returns the exit code."""
    print("sensorcast fleet: not built yet", file=sys.stderr)
    return 2
