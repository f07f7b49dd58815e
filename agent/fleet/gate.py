"""The rollout gate: conditions on one device's shadow-vs-live quality report, read from its
retained quality message after the soak (``mae_ratio<=1.05``, ``coverage>=0.7``...)."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sensorcast.agent.errors import ConfigError

__all__ = ["DEFAULT_GATE", "METRICS", "Condition", "failures", "measure", "parse_gate"]

#: What each metric is, for ``--help`` and the errors.
METRICS = {
    "mae_ratio": "shadow MAE / live MAE on the same actuals, over every step (below 1: better)",
    "skill_drop": "live skill - shadow skill against the last-value baseline",
    "skill": "the shadow's skill against the last-value baseline",
    "coverage": "the shadow band's empirical coverage",
    "errors": "shadow forecasts that raised",
    "forecasts": "windows the shadow forecast",
}
#: The gate when ``--gate`` is not given.
DEFAULT_GATE = ("mae_ratio<=1.05", "errors<=0")

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq,
}  # fmt: skip
_EXPR = re.compile(r"\s*([a-z_]+)\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+)\s*")
_BASELINE = "last_value"


@dataclass(frozen=True)
class Condition:
    """``metric op value``, e.g. ``mae_ratio <= 1.05``."""

    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def check(self, measured: Optional[float]) -> Optional[str]:
        """None if it holds, else why not (``mae_ratio 3.41 > 1.05``)."""
        if measured is None:
            return f"{self.metric} unknown (the device reported none)"
        if _OPS[self.op](measured, self.value):
            return None
        return f"{self.metric} {measured:g} {_negated(self.op)} {self.value:g}"


def _negated(op: str) -> str:
    return {"<=": ">", ">=": "<", "<": ">=", ">": "<=", "==": "!="}[op]


def parse_gate(text: str) -> Condition:
    """One ``--gate`` expression; :class:`ConfigError` (one line, with the metrics) if bad."""
    match = _EXPR.fullmatch(text)
    metrics = ", ".join(METRICS)
    if match is None:
        raise ConfigError(
            f"--gate {text!r}: write METRIC OP NUMBER, e.g. mae_ratio<=1.05 (OP: <=, >=, <, "
            f">, ==; METRIC: {metrics})"
        )
    metric, op, raw = match.groups()
    if metric not in METRICS:
        raise ConfigError(f"--gate {text!r}: unknown metric {metric!r}; one of {metrics}")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"--gate {text!r}: {raw!r} is not a finite number")
    return Condition(metric, op, value)


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _skill(report: dict[str, Any]) -> Optional[float]:
    skill = report.get("skill")
    return _num(skill.get(_BASELINE)) if isinstance(skill, dict) else None


def measure(metric: str, quality: dict[str, Any]) -> Optional[float]:
    """``metric`` from a quality message (the live report with its ``"shadow"`` one); None
    when the device did not report it."""
    shadow = quality.get("shadow")
    if not isinstance(shadow, dict):
        return None
    if metric == "skill_drop":
        live, mine = _skill(quality), _skill(shadow)
        return None if live is None or mine is None else round(live - mine, 6)
    if metric == "skill":
        return _skill(shadow)
    return _num(shadow.get(metric))


def failures(gate: Sequence[Condition], quality: dict[str, Any]) -> list[str]:
    """Why the gate does not hold on this quality message (empty: it holds)."""
    out = []
    for cond in gate:
        why = cond.check(measure(cond.metric, quality))
        if why is not None:
            out.append(why)
    return out
