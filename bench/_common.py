"""What the stand-alone benchmark scripts share (soak, flood)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.demo import DEMO_DIR  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid``, MB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def demo_bundle(out: Path, period_s: float) -> Path:
    """The demo's Keras model converted (float32) with another period, so windows fill fast."""
    from convert.cli import main as convert_main

    code = convert_main([str(DEMO_DIR / "room.keras"), "-o", str(out), "--quiet",
                         "--norm", str(DEMO_DIR / "norm.json"), "--features",
                         "temperature,humidity", "--quantize", "float32",
                         "--period", str(period_s)])  # fmt: skip
    if code != 0:
        raise SystemExit(f"converting the demo model for the benchmark failed ({code})")
    return out
