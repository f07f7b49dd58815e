"""The conversion report: every mode tried, its size, error, speed, and the choice."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = ["DEFAULT_MAX_ERROR_FRACTION", "Candidate", "Report", "choose"]

#: Default ``--max-error`` for ``auto``: this fraction of the targets' std, as MAE.
DEFAULT_MAX_ERROR_FRACTION = 0.02
#: Bundles within this fraction of the smallest size count as a tie; the faster wins.
SIZE_TIE = 0.10

OK = "ok"


@dataclass
class Candidate:
    """One quantization mode's outcome."""

    mode: str
    status: str = OK  #: ok, unavailable, beyond bound, over budget
    reason: str = ""
    size: int = 0
    mae: float = math.nan
    max_abs: float = math.nan
    rel_mae: float = math.nan
    rel_max: float = math.nan
    latency_ms: float = math.nan
    warnings: list[str] = field(default_factory=list)
    tflite: bytes = b""

    def as_dict(self, float32_size: Optional[int]) -> dict[str, Any]:
        ratio = self.size / float32_size if float32_size and self.size else None
        return {
            "mode": self.mode,
            "status": self.status,
            "reason": self.reason,
            "size_bytes": self.size or None,
            "ratio_to_float32": ratio,
            "mae": _num(self.mae),
            "max_abs": _num(self.max_abs),
            "rel_mae": _num(self.rel_mae),
            "rel_max": _num(self.rel_max),
            "latency_ms": _num(self.latency_ms),
            "warnings": self.warnings,
        }


def _num(value: float) -> Optional[float]:
    return None if math.isnan(value) else value


def choose(candidates: list[Candidate], max_error: float) -> tuple[Optional[Candidate], str]:
    """Smallest bundle whose MAE is within ``max_error``; near-ties go to the faster one."""
    for c in candidates:
        if c.status == OK and c.mae > max_error:
            c.status = "over budget"
            c.reason = f"MAE {c.mae:.3g} > max error {max_error:.3g}"
    good = [c for c in candidates if c.status == OK]
    if not good:
        tried = [c for c in candidates if not math.isnan(c.mae)]
        closest = min(tried, key=lambda c: c.mae) if tried else None
        hint = f"; the closest was {closest.mode} with MAE {closest.mae:.3g}" if closest else ""
        return None, f"no mode stays within max error {max_error:.3g}{hint}; raise --max-error"
    smallest = min(c.size for c in good)
    ties = [c for c in good if c.size <= smallest * (1 + SIZE_TIE)]
    best = min(ties, key=lambda c: c.latency_ms)
    why = f"smallest bundle with MAE within {max_error:.3g}"
    if len(ties) > 1:
        others = ", ".join(c.mode for c in ties if c is not best)
        why += f" (fastest of the sizes within {SIZE_TIE:.0%} of the smallest; also {others})"
    return best, why


@dataclass
class Report:
    """What the converter did, for the terminal and for ``--report FILE``."""

    model: str
    model_sha256: str
    data: str
    windows: int
    target_std: float
    max_error: Optional[float]
    runtime: str
    candidates: list[Candidate]
    chosen: Optional[str] = None
    why: str = ""

    @property
    def float32_size(self) -> Optional[int]:
        return next((c.size for c in self.candidates if c.mode == "float32" and c.size), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_sha256": self.model_sha256,
            "evaluation": {
                "data": self.data,
                "windows": self.windows,
                "target_std": self.target_std,
            },
            "max_error": self.max_error,
            "host": _host(),
            "runtime": self.runtime,
            "modes": [c.as_dict(self.float32_size) for c in self.candidates],
            "chosen": self.chosen,
            "why": self.why,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")

    def table(self) -> str:
        """A fixed-width table, one row per mode."""
        head = ("mode", "size", "vs f32", "MAE", "max abs", "MAE/std", "ms", "status")
        rows = [head]
        for c in self.candidates:
            d = c.as_dict(self.float32_size)
            mark = " <- chosen" if c.mode == self.chosen else ""
            rows.append(
                (
                    c.mode,
                    f"{c.size / 1024:.1f} KB" if c.size else "-",
                    f"{d['ratio_to_float32']:.2f}x" if d["ratio_to_float32"] else "-",
                    _fmt(c.mae),
                    _fmt(c.max_abs),
                    f"{c.rel_mae:.2%}" if not math.isnan(c.rel_mae) else "-",
                    f"{c.latency_ms:.3f}" if not math.isnan(c.latency_ms) else "-",
                    (c.status + (f": {c.reason}" if c.reason else "")) + mark,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
        lines = [
            "  ".join(r[i].ljust(widths[i]) for i in range(len(head) - 1)) + "  " + r[-1]
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        footer = (
            f"errors vs the reference model on {self.windows} {self.data} windows "
            f"(targets' std {self.target_std:.4g}); latency with {self.runtime} on this host"
        )
        if self.chosen:
            footer += f"\nchosen: {self.chosen}: {self.why}"
        return "\n".join([*lines, footer])


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def _host() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": platform.machine(),
        "cpu": model,
        "cores": os.cpu_count(),
        "system": platform.platform(),
        "python": platform.python_version(),
    }
