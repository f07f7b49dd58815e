"""A bundle and a stream's inputs, described for people: ``sensorcast info`` and ``check``.

Plain text, one ``label: value`` line per fact, so a reader sees what a bundle is, how well
it was shown to forecast, on what inputs it was verified, and what it is made of. Only the
fields a bundle has are shown: an old bundle prints as it always did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sensorcast.agent.forecast.manifest import Accuracy, Bundle, Manifest

if TYPE_CHECKING:
    from sensorcast.agent.config import StreamConfig

__all__ = ["describe_bundle", "describe_inputs"]

#: Ops named in the histogram line; the rest are counted as "N more".
TOP_OPS = 6
#: How each ``recurrence`` runs, for people.
RECURRENCE_TEXT = {
    "fused": "fused (one TFLite sequence op per recurrent layer)",
    "loop": "loop (a TFLite WHILE loop over the time steps)",
    "unrolled": "unrolled (the ops repeated for every time step)",
    "none": "none (no recurrent layer)",
}
BASELINE_TEXT = {"last_value": "last value", "seasonal": "seasonal"}


def describe_bundle(bundle: Bundle) -> list[str]:
    """The ``sensorcast info`` lines of ``bundle``."""
    m = bundle.manifest
    lines = [
        f"bundle:        {bundle.path} ({len(bundle.model)} bytes, sha256 {bundle.sha256[:12]})",
        f"window:        {m.window} steps x {m.period_s:g} s",
        f"features:      {', '.join(m.features)}",
        *_computed(m),
        f"targets:       {', '.join(m.targets)}",
        f"horizon:       {m.horizon} steps",
        f"quantization:  {m.quantization} (input {_quant(m.input)}, output {_quant(m.output)})",
    ]
    if m.forced:
        lines.append(
            "FORCED:        written with --force past the converter's sanity bound: it "
            "disagrees with the Keras model more than this mode should (warnings say how much)"
        )
    if m.normalization:
        norm = ", ".join(f"{k} {v.mean:.4g}±{v.std:.4g}" for k, v in m.normalization.items())
        lines.append(f"normalization: {norm}")
    else:
        lines.append("normalization: none (the model works on raw values)")
    if m.verified_range:
        ranges = ", ".join(f"{k} {lo:.4g} .. {hi:.4g}" for k, (lo, hi) in m.verified_range.items())
        lines.append(
            f"verified on:   {ranges} (a window outside is still forecast, marked out_of_range)"
        )
    if m.accuracy:
        lines += _accuracy(m.accuracy, m)
    if m.ops or m.recurrence:
        lines.append(f"ops:           {_ops(m)}")
    if m.latency_ms:
        lines.append(f"latency:       {m.latency_ms:.3f} ms per forecast on the converting host")
    if m.selection:
        lines.append(f"chosen:        {m.selection}")
    lines.append(f"source:        {m.source_name} sha256 {m.source_sha256[:12]}")
    versions = ", ".join(f"{k} {v}" for k, v in sorted(m.versions.items()))
    lines.append(f"versions:      {versions}")
    if m.created:
        lines.append(f"created:       {m.created}")
    lines += [f"warning:       {warning}" for warning in m.warnings]
    return lines


def describe_inputs(sc: StreamConfig, manifest: Manifest) -> str:
    """Where a stream's readings come from, for ``check``: its topic and each source, and
    the features the agent computes itself (no input asked for them)."""
    parts = [f"input topic {sc.input_topic}"] if sc.input_topic is not None else []
    for src in sc.sources:
        target = f"{src.feature} from " if src.feature else ""
        if src.type in ("mqtt", "mqtt_value"):
            what = f"{src.type} topic {src.topic}"
        elif src.type == "file":
            what = f"file {src.path} every {src.interval_s:g} s"
        elif src.type == "command":
            what = f"command {src.command[0]} every {src.interval_s:g} s"
        else:
            what = src.type
        parts.append(target + what)
    if len(parts) == 1:
        text = parts[0] if sc.input_topic is not None else f"input: {parts[0]}"
    else:
        text = "inputs: " + "; ".join(parts)
    if manifest.computed:
        text += "; computed: " + ", ".join(
            f"{name} <- {kind}" for name, kind in manifest.computed.items()
        )
    return text


def _computed(m: Manifest) -> list[str]:
    if not m.computed:
        return []
    pairs = ", ".join(f"{name} <- {kind}" for name, kind in m.computed.items())
    return [f"computed:      {pairs} (from each slot's time by the agent; no input needed)"]


def _accuracy(a: Accuracy, m: Manifest) -> list[str]:
    rel = f", {a.mae / a.target_std:.2%} of the targets' std" if a.target_std > 0 else ""
    every = f"; max abs {a.max_abs_all:.4g} over every window" if a.max_abs_all else ""
    lines = [
        f"accuracy:      MAE {a.mae:.4g}, max abs {a.max_abs:.4g} (target units{rel}; "
        f"vs Keras on {a.windows} {a.data} windows{every})"
    ]
    if a.out_of_range_mae or a.out_of_range_max_abs:
        lines.append(
            f"out of range:  MAE {a.out_of_range_mae:.4g}, max abs {a.out_of_range_max_abs:.4g} "
            "vs Keras on windows moved 1 and 2 stds beyond the data"
        )
    for name, t in a.per_target.items():
        beyond = (
            f"; beyond the data MAE {t.out_of_range_mae:.4g}, max {t.out_of_range_max_abs:.4g}"
            if t.out_of_range_mae or t.out_of_range_max_abs
            else ""
        )
        every = f" ({t.max_abs_all:.4g} over every window)" if t.max_abs_all else ""
        lines.append(
            f"  {name + ':':<12} MAE {t.mae:.4g}, max abs {t.max_abs:.4g}{every}{beyond} "
            f"(std {t.std:.4g})"
        )
    lines += _forecast(a, m)
    lines += _band(a)
    return lines


def _band(a: Accuracy) -> list[str]:
    """The 80 % band of the bundle's residuals, at the first and last step (first target)."""
    low, high = a.residual_quantiles.get("0.1"), a.residual_quantiles.get("0.9")
    if not low or not high:
        return []
    return [
        f"residuals:     80 % between {low[0][0]:+.4g} and {high[0][0]:+.4g} at the next step, "
        f"{low[-1][0]:+.4g} and {high[-1][0]:+.4g} at step {len(low)} (actual - forecast, "
        "held-out data)"
    ]


def _forecast(a: Accuracy, m: Manifest) -> list[str]:
    """The bundle's own error against what happened, the Keras model's, and the skill."""
    lines = []
    if a.forecast_mae:
        first, last = a.forecast_mae[0], a.forecast_mae[-1]
        lines.append(
            f"forecast MAE:  {', '.join(f'{v:.4g}' for v in first)} at the next step, "
            f"{', '.join(f'{v:.4g}' for v in last)} at step {len(a.forecast_mae)} "
            "(vs what happened in the held-out data; the agent's quality reports "
            "compare with this)"
        )
    if a.keras_forecast_mae:
        lines.append(
            f"Keras MAE:     {_mean(a.keras_forecast_mae):.4g} (the Keras model, same windows)"
        )
    if a.baselines:
        names = ", ".join(
            f"{_baseline(name, a)} {_mean(table):.4g}" for name, table in a.baselines.items()
        )
        lines.append(f"baselines:     MAE {names} (naive forecasts on the same windows)")
    if a.skill is not None and a.baselines:
        best = min(a.baselines, key=lambda name: _mean(a.baselines[name]))
        verdict = (
            ": LOSES to a naive forecast; check --norm first, then the model's training"
            if a.skill < 0
            else " (1 - bundle MAE / its MAE)"
        )
        lines.append(f"skill:         {a.skill * 100:.0f} % vs {_baseline(best, a)}{verdict}")
    return lines


def _baseline(name: str, a: Accuracy) -> str:
    text = BASELINE_TEXT.get(name, name)
    return f"{text} ({a.season} steps)" if name == "seasonal" and a.season else text


def _mean(table: tuple[tuple[float, ...], ...]) -> float:
    values = [v for row in table for v in row]
    return sum(values) / len(values) if values else 0.0


def _ops(m: Manifest) -> str:
    total = sum(m.ops.values())
    top = sorted(m.ops.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{name} {count}" for name, count in top[:TOP_OPS])
    more = f" and {len(top) - TOP_OPS} more kinds" if len(top) > TOP_OPS else ""
    ops = f"{total} ({shown}{more})" if m.ops else "not recorded"
    recurrence = RECURRENCE_TEXT.get(m.recurrence, "not recorded")
    return f"{ops}; recurrence: {recurrence}"


def _quant(q: object) -> str:
    dtype = getattr(q, "dtype", "float32")
    if dtype == "int8":
        return f"int8 scale {getattr(q, 'scale', 0):.4g} zero point {getattr(q, 'zero_point', 0)}"
    return str(dtype)
