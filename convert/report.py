"""The conversion report: every mode tried, its size, error, speed, and the choice."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = ["DEFAULT_MAX_ERROR_FRACTION", "Candidate", "Report", "TargetStats"]

#: Default ``--max-error``: this fraction of each target's std, as MAE.
DEFAULT_MAX_ERROR_FRACTION = 0.02

OK = "ok"
NAN = math.nan


@dataclass
class TargetStats:
    """One target's error against Keras, in its own units."""

    std: float  #: The target's std in the data: what its bound and budget are judged against.
    mae: float = NAN  #: Held-out windows.
    max_abs: float = NAN  #: Held-out windows.
    max_abs_all: float = NAN  #: Every window, calibration and held-out.
    #: Windows moved 1 and 2 stds beyond the data's range: (MAE, max abs) by level.
    beyond: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def out_of_range_mae(self) -> float:
        return float(np.mean([v[0] for v in self.beyond.values()])) if self.beyond else NAN

    @property
    def out_of_range_max_abs(self) -> float:
        return max((v[1] for v in self.beyond.values()), default=NAN)

    def as_dict(self) -> dict[str, Any]:
        return {
            "std": self.std,
            "mae": _num(self.mae),
            "max_abs": _num(self.max_abs),
            "max_abs_all": _num(self.max_abs_all),
            "out_of_range_mae": _num(self.out_of_range_mae),
            "out_of_range_max_abs": _num(self.out_of_range_max_abs),
            "beyond": {
                f"{level}std": {"mae": _num(mae), "max_abs": _num(peak)}
                for level, (mae, peak) in self.beyond.items()
            },
        }


@dataclass
class Candidate:
    """One quantization mode's outcome."""

    mode: str
    status: str = OK  #: ok, unavailable, beyond bound, over budget
    reason: str = ""
    size: int = 0
    latency_ms: float = NAN
    warnings: list[str] = field(default_factory=list)
    tflite: bytes = b""
    targets: dict[str, TargetStats] = field(default_factory=dict)
    #: Stds beyond the data's range this mode holds its bound to (0: only the data's range).
    verified_level: int = 0
    #: The input range it was verified on, reading units, by sensor feature.
    verified_range: dict[str, tuple[float, float]] = field(default_factory=dict)
    forecasts: Optional[np.ndarray] = None  #: Its forecasts of the held-out windows.

    def _over(self, key: str, fold: Any) -> float:
        values = [getattr(t, key) for t in self.targets.values()]
        return float(fold(values)) if values else NAN

    @property
    def mae(self) -> float:
        """Over every target (mixed units; the per-target figures are the ones judged)."""
        return self._over("mae", np.mean)

    @property
    def max_abs(self) -> float:
        return self._over("max_abs", max)

    @property
    def max_abs_all(self) -> float:
        return self._over("max_abs_all", max)

    @property
    def out_of_range_mae(self) -> float:
        return self._over("out_of_range_mae", np.mean)

    @property
    def out_of_range_max_abs(self) -> float:
        return self._over("out_of_range_max_abs", max)

    @property
    def rel_mae(self) -> float:
        """The worst target's MAE over its std."""
        return max((t.mae / t.std for t in self.targets.values()), default=NAN)

    @property
    def rel_max(self) -> float:
        return max((t.max_abs / t.std for t in self.targets.values()), default=NAN)

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
            "max_abs_all": _num(self.max_abs_all),
            "rel_mae": _num(self.rel_mae),
            "rel_max": _num(self.rel_max),
            "out_of_range_mae": _num(self.out_of_range_mae),
            "out_of_range_max_abs": _num(self.out_of_range_max_abs),
            "per_target": {name: t.as_dict() for name, t in self.targets.items()},
            "verified_std": self.verified_level,
            "verified_range": {k: list(v) for k, v in self.verified_range.items()},
            "latency_ms": _num(self.latency_ms),
            "warnings": self.warnings,
        }


def _num(value: float) -> Optional[float]:
    """JSON has no NaN or infinity: None for both (an infinite error is a NaN forecast)."""
    return value if math.isfinite(value) else None


@dataclass
class Report:
    """What the converter did, for the terminal and for ``--report FILE``."""

    model: str
    model_sha256: str
    data: str
    windows: int
    budget: dict[str, float]  #: The largest MAE accepted per target, its own units.
    runtime: str
    candidates: list[Candidate]
    budget_given: bool = False  #: ``--max-error`` was given (else the default fraction).
    chosen: Optional[str] = None
    why: str = ""
    forced: bool = False

    @property
    def float32_size(self) -> Optional[int]:
        return next((c.size for c in self.candidates if c.mode == "float32" and c.size), None)

    @property
    def target_std(self) -> float:
        """The targets' std, averaged (each target is judged against its own)."""
        stds = [t.std for c in self.candidates[:1] for t in c.targets.values()]
        return float(np.mean(stds)) if stds else NAN

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_sha256": self.model_sha256,
            "evaluation": {
                "data": self.data,
                "windows": self.windows,
                "target_std": _num(self.target_std),
            },
            # The per-target budgets' mean (an overall MAE within it when every target is
            # within its own); each target is judged by max_error_per_target.
            "max_error": float(np.mean(list(self.budget.values()))),
            "max_error_per_target": self.budget,
            "host": _host(),
            "runtime": self.runtime,
            "modes": [c.as_dict(self.float32_size) for c in self.candidates],
            "chosen": self.chosen,
            "why": self.why,
            "forced": self.forced,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")

    def _rows(self) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = []
        for c in self.candidates:
            d = c.as_dict(self.float32_size)
            mark = " <- chosen" if c.mode == self.chosen else ""
            head = (
                c.mode,
                f"{c.size / 1024:.1f} KB" if c.size else "-",
                f"{d['ratio_to_float32']:.2f}x" if d["ratio_to_float32"] else "-",
            )
            tail = (
                f"{c.latency_ms:.3f}" if math.isfinite(c.latency_ms) else "-",
                (c.status + (f": {c.reason}" if c.reason else "")) + mark,
            )
            if not c.targets:  # never measured
                rows.append((*head, *("-",) * 8, *tail))
                continue
            verified = f"+-{c.verified_level} std" if c.verified_level else "data"
            for i, (name, t) in enumerate(c.targets.items()):
                beyond = [t.beyond.get(level, (NAN, NAN)) for level in (1, 2)]
                errors = (
                    name,
                    _fmt(t.mae),
                    _fmt(t.max_abs),
                    _fmt(t.max_abs_all),
                    f"{t.mae / t.std:.2%}" if math.isfinite(t.mae / t.std) else "-",
                    _fmt(beyond[0][0]),
                    _fmt(beyond[1][0]),
                )
                if i == 0:
                    rows.append((*head, *errors, verified, *tail))
                else:  # the other targets on their own lines under the mode's
                    rows.append(("", "", "", *errors, "", "", ""))
        return rows

    def table(self) -> str:
        """A fixed-width table, one row per mode (and one more per further target)."""
        head = (
            "mode", "size", "vs f32", "target", "MAE", "max", "max all", "MAE/std",
            "MAE +1std", "MAE +2std", "verified", "ms", "status",
        )  # fmt: skip
        rows = [head, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
        lines = [
            "  ".join(r[i].ljust(widths[i]) for i in range(len(head) - 1)) + "  " + r[-1]
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        budget = ", ".join(f"{k} {v:.3g}" for k, v in self.budget.items())
        footer = (
            f"errors vs the reference model on {self.windows} held-out {self.data} windows "
            f"(max all: every window; MAE +1/+2std: windows moved 1/2 stds beyond the data); "
            f"max error (MAE) per target: {budget}; latency with {self.runtime} on this host"
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
