"""Which candidate to write: the budget per target, the sanity bound, ``auto`` and ``--force``.

One rule for the sanity bound (:data:`~sensorcast.convert.verify.BOUNDS`): it always holds, for a
single mode or ``auto``, with or without ``--max-error``; ``--force`` is the only way past it
(or past the budget), and a forced bundle says so in its manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
from sensorcast.convert import ConvertError
from sensorcast.convert.report import DEFAULT_MAX_ERROR_FRACTION, OK, Candidate

__all__ = ["SIZE_TIE", "Decision", "MaxError", "budgets", "decide", "parse_max_error"]

#: Bundles within this fraction of the smallest size count as a tie; the faster wins.
SIZE_TIE = 0.10
#: ``auto`` holds a mode to its budget on windows this many stds beyond the data's range too.
BEYOND_LEVEL = 1

MaxError = Union[float, dict[str, float]]


def parse_max_error(text: Optional[str]) -> Optional[MaxError]:
    """``--max-error``: one number for every target, or ``temp=0.1,hum=1`` per target."""
    if text is None:
        return None
    try:
        if "=" not in text:
            value = float(text)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError
            return value
        spec = {}
        for part in text.split(","):
            name, _, number = part.partition("=")
            value = float(number)
            if not name.strip() or not (value > 0 and math.isfinite(value)):
                raise ValueError
            spec[name.strip()] = value
        return spec
    except ValueError:
        raise ConvertError(
            f"--max-error {text!r}: give a positive number in target units, "
            "or one per target: temp=0.1,hum=1"
        ) from None


def budgets(
    given: Optional[MaxError], targets: list[str], target_std: np.ndarray
) -> dict[str, float]:
    """The largest MAE accepted per target, in its own units (default: a fraction of its std)."""
    default = {t: DEFAULT_MAX_ERROR_FRACTION * float(s) for t, s in zip(targets, target_std)}
    if given is None:
        return default
    if not isinstance(given, dict):
        return {t: given for t in targets}
    unknown = [name for name in given if name not in targets]
    if unknown:
        raise ConvertError(
            f"--max-error names {unknown[0]!r}, not a target (targets: {', '.join(targets)})"
        )
    return {**default, **given}


@dataclass
class Decision:
    """The candidate to write (None: refuse), why, and the warnings of a forced one."""

    chosen: Optional[Candidate]
    why: str
    forced: list[str] = field(default_factory=list)


def _over_budget(c: Candidate, budget: dict[str, float]) -> Optional[str]:
    for name, t in c.targets.items():
        if not t.mae <= budget[name]:
            return f"MAE {t.mae:.3g} > max error {budget[name]:.3g} ({name})"
    return None


def _fragile(c: Candidate, budget: dict[str, float]) -> Optional[str]:
    """Why ``c`` is over budget on windows beyond the data's range, or None."""
    for name, t in c.targets.items():
        mae = t.beyond.get(BEYOND_LEVEL, (math.nan,))[0]
        if not mae <= budget[name]:
            return (
                f"beyond the data's range (+-{BEYOND_LEVEL} std) MAE {mae:.3g} > "
                f"max error {budget[name]:.3g} ({name})"
            )
    return None


def _refusal(c: Candidate) -> str:
    """Why ``c`` is refused, and the fix; quantization is never blamed for float32."""
    if c.status == "over budget":
        hint = "raise --max-error or choose a less aggressive --quantize mode"
    elif "overflows float16" in c.reason:  # the reason names the fix
        return f"the {c.mode} model {c.reason} (--force writes it anyway)"
    elif c.mode == "float32" and c.reason.startswith("disagrees"):
        hint = (
            "float32 is not quantized, so the inputs are likely far outside what the model "
            "saw in training: pass --norm with the normalization it was trained with"
        )
    else:
        hint = "try a less aggressive --quantize mode"
    return f"the {c.mode} model {c.reason}; {hint} (--force writes it anyway)"


def _forced(c: Candidate) -> list[str]:
    return [
        f"FORCED: written with --force although the {c.mode} model {c.reason}; "
        "its forecasts may be wrong"
    ]


def _smallest(good: list[Candidate]) -> tuple[Candidate, str]:
    smallest = min(c.size for c in good)
    ties = [c for c in good if c.size <= smallest * (1 + SIZE_TIE)]
    best = min(ties, key=lambda c: c.latency_ms)
    note = ""
    if len(ties) > 1:
        others = ", ".join(c.mode for c in ties if c is not best)
        note = f" (fastest of the sizes within {SIZE_TIE:.0%} of the smallest; also {others})"
    return best, note


def _single(c: Candidate, budget: dict[str, float], budget_given: bool, force: bool) -> Decision:
    if c.status == "unavailable":
        return Decision(None, c.reason)
    if c.status == OK and budget_given and (over := _over_budget(c, budget)):
        c.status, c.reason = "over budget", over
    if c.status == OK:
        return Decision(
            c, "requested, MAE within --max-error" if budget_given else "requested with --quantize"
        )
    if force:
        return Decision(c, "requested with --quantize, written with --force", _forced(c))
    return Decision(None, _refusal(c))


def _auto(candidates: list[Candidate], budget: dict[str, float], force: bool) -> Decision:
    for c in candidates:
        if c.status == OK and (over := _over_budget(c, budget)):
            c.status, c.reason = "over budget", over
    good = [c for c in candidates if c.status == OK]
    robust = [c for c in good if _fragile(c, budget) is None]
    if robust:
        for c in good:
            if c not in robust:  # loses to a mode that holds beyond the data's range
                c.status, c.reason = "over budget", str(_fragile(c, budget))
        best, note = _smallest(robust)
        return Decision(
            best,
            f"smallest bundle with MAE within the max error, also beyond the data's range{note}",
        )
    if good:
        best, note = _smallest(good)
        return Decision(
            best,
            f"smallest bundle with MAE within the max error{note}; "
            "no mode holds it beyond the data's range",
        )
    measured = [c for c in candidates if c.targets]
    if force and measured:
        best = min(measured, key=lambda c: c.rel_mae)
        return Decision(best, "closest to the reference, written with --force", _forced(best))
    f32 = next((c for c in candidates if c.mode == "float32"), None)
    if f32 is not None and f32.status == "beyond bound":  # not quantization's fault
        return Decision(None, _refusal(f32))
    closest = min(measured, key=lambda c: c.rel_mae) if measured else None
    hint = f"; the closest was {closest.mode} ({closest.reason})" if closest else ""
    return Decision(
        None, f"no mode stays within its bound and the max error{hint}; raise --max-error"
    )


def decide(
    candidates: list[Candidate],
    auto: bool,
    budget: dict[str, float],
    budget_given: bool,
    force: bool,
) -> Decision:
    """Pick the bundle to write, marking each candidate's status and reason."""
    if auto:
        return _auto(candidates, budget, force)
    return _single(candidates[0], budget, budget_given, force)
