"""RESULTS-quality.md from the benchmark's figures."""

from __future__ import annotations

from typing import Any, Optional

from bench.harness.markdown import table

__all__ = ["render"]

TARGET = (0.75, 0.85)  #: The nominal 80 % band's coverage should land here.


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1%}"


def _num(x: Optional[float], fmt: str = "{:.3g}") -> str:
    return "-" if x is None else fmt.format(x)


def render(r: dict[str, Any]) -> str:
    """The whole results file."""
    host = r["host"]
    lines = [
        "# Forecast quality: real data replayed through the agent",
        "",
        f"Command: `{r['command']}` (from the repository root; about 20 s on 2 cores).",
        "",
        f"Measured {host['date']} on {host['cpu']} ({host['usable_cores']} usable cores), "
        f"{host['system']}, Python {host['python']}; commit {r['commit']}.",
        "",
        "Each series is replayed row by row through the agent's own pipeline "
        "(`Service(cfg).open()`: the bundle, the quality tracker with its adaptive band, the "
        "anomaly detector, the outbox) in data time; the figures are computed from the "
        "forecast and anomaly payloads it put in its outbox, against the data. Defaults "
        "throughout: `level = 0.8`, `[quality]` as shipped. See bench/quality/__init__.py.",
        "",
    ]
    for name, s in r["series"].items():
        lines += _series(name, s)
    return "\n".join(lines) + "\n"


def _series(name: str, s: dict[str, Any]) -> list[str]:
    q, period = s["quality"], s["period_s"]
    low, high = TARGET
    verdict = "within" if low <= q["coverage"] <= high else "OUTSIDE"
    lines = [
        f"## {name}: {s['note']}",
        "",
        f"`{s['bundle']}` ({s['model']}), {s['rows']} rows every {period:g} s, "
        f"{s['from']} to {s['to']}; {q['forecasts']} forecasts of {s['horizon']} steps scored"
        f" ({q['unbanded']} published before the band was known).",
        "",
        f"**Coverage of the nominal 80 % band: {_pct(q['coverage'])}** over all steps "
        f"({verdict} the 75-85 % target). Skill (1 - MAE / baseline MAE, all steps): "
        f"{_pct(q['skill']['last_value'])} against the last value, "
        f"{_pct(q['skill']['seasonal'])} against one day earlier.",
        "",
    ]
    head = ["step", "coverage", "band width", "MAE", "MAE last value", "MAE seasonal",
            "skill vs last value", "skill vs seasonal"]  # fmt: skip
    rows = []
    base, skill = q["baseline_mae_by_step"], q["skill_by_step"]
    for i, cov in enumerate(q["coverage_by_step"]):
        rows.append([
            i + 1, _pct(cov), _num(q["width_by_step"][i]), _num(q["mae_by_step"][i]),
            _num(base["last_value"][i]), _num(base["seasonal"][i]),
            _pct(skill["last_value"][i]), _pct(skill["seasonal"][i]),
        ])  # fmt: skip
    lines += table(head, rows)
    t = s["tracker"]
    c = next(iter(s["counters"].values()))
    lines += [
        "",
        f"Agent counters: {c.get('forecasts')} forecasts, {c.get('forecasts_out_of_range')} "
        f"out of the bundle's verified range, {c.get('forecasts_fallback')} fallback, "
        f"{c.get('errors')} errors.",
        "",
        f"The agent's own rolling view at the end (its last 200 residuals per step): "
        f"coverage {_pct(t.get('coverage_mean'))}, skill "
        + ", ".join(f"{k} {_pct(v)}" for k, v in (t.get("skill") or {}).items())
        + ".",
        "",
    ]
    lines += _anomalies(s)
    return lines


def _anomalies(s: dict[str, Any]) -> list[str]:
    fa = s["false_alarms"]
    reasons = ", ".join(f"{k} {v}" for k, v in fa["reasons"].items()) or "none"
    lines = [
        f"**False alarms on the clean data: {fa['started']} in {fa['weeks']:.1f} weeks = "
        f"{fa['per_week']:.2f} per week** (reasons: {reasons}).",
        "",
        f"Injected faults on the target, {s['faults'][next(iter(s['faults']))]['faults']} of "
        f"each kind, {s['faults'][next(iter(s['faults']))]['periods']} periods long, spread "
        f"evenly after 48 clean periods; the next-step error's std is "
        f"{s['residual_sigma']:.3g}, the series' std {s['series_std']:.3g} (target units). "
        "Delay: periods from the first faulty reading to the anomaly's publication "
        "(1 = when that reading's period closed).",
        "",
    ]
    rows = []
    for label, d in s["faults"].items():
        size = f"{d['size']:+.3g}" if d["size"] else "-"
        found = sorted({r for r in d["reasons"] if r})
        rows.append([
            label, size, f"{d['detected']}/{d['faults']}", _num(d["median"], "{:g}"),
            _num(d["max"], "{:g}"), ", ".join(found) or "-",
        ])  # fmt: skip
    lines += table(["fault", "size", "detected", "median delay", "max delay", "reasons"], rows)
    lines.append("")
    return lines
