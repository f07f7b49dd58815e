"""``sensorcast evaluate``: a model's forecasts on the test split against naive baselines.

Works on a Keras model (needs TensorFlow and the normalization JSON written by ``train``)
or on a bundle (runs it through the agent's own forecaster: no TensorFlow, so it also runs
on the device). The test split is the last 10 % of the CSV's rows, as ``train`` left it;
every window whose forecast steps all fall in it counts. Baselines: the last value carried
forward, and the value one season earlier (``--season`` periods, default one day). With
``--plot`` (matplotlib, the ``[plot]`` extra) it draws forecast against actual and the
error per step, for a person to look at.

A bundle whose manifest has residual quantiles (a converter calibrated with actuals) also
gets its prediction band at ``--level`` (default 0.8: from the 10 % to the 90 % quantile
of actual - forecast, per step and target, as the agent starts its intervals): the plot
draws it around the forecast, and the summary and report give how often the actuals of the
test split fell inside it (its empirical coverage, overall and per step).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
from sensorcast.convert import ConvertError, run_command
from sensorcast.convert.calibrate import parse_time_features
from sensorcast.convert.dataset import Series, load_series
from sensorcast.convert.train import names

__all__ = ["main"]

logger = logging.getLogger(__name__)

Predict = Callable[[np.ndarray], np.ndarray]  #: (n, window, F) raw -> (n, horizon, T) raw


class Model(NamedTuple):
    """A model to evaluate, as a function, and what it takes and gives."""

    predict: Predict
    features: list[str]
    targets: list[str]
    window: int
    horizon: int
    computed: dict[str, str]  #: Features computed from the ts column: feature -> time kind.
    #: The bundle's ``accuracy.residual_quantiles`` as probability -> (horizon, targets)
    #: signed residuals in target units; empty for a Keras model or an uncalibrated bundle.
    quantiles: dict[float, np.ndarray]


class Band(NamedTuple):
    """The prediction band of every evaluated forecast and how often it held the actual."""

    level: float  #: Nominal coverage, e.g. 0.8.
    lower: np.ndarray  #: (n, horizon, targets) target units.
    upper: np.ndarray  #: Like ``lower``.
    coverage: float  #: Share of actuals inside [lower, upper] over every step and target.
    by_step: np.ndarray  #: (horizon,) the same per step.


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensorcast evaluate",
        description="MAE/RMSE of a model on the test split against naive baselines.",
    )
    p.add_argument("model", type=Path, help="model.keras (with its .norm.json) or a bundle")
    p.add_argument("data", type=Path, help="the CSV the model was trained on")
    p.add_argument("--features", help="input columns (a bundle knows them)")
    p.add_argument("--targets", help="forecast columns (a bundle knows them)")
    p.add_argument("--norm", type=Path, help="normalization JSON (default: MODEL.norm.json)")
    p.add_argument("--time-features", help="inputs computed from the ts column, as for "
                   "convert: NAME=KIND,... or day, week, year (a bundle knows them)")  # fmt: skip
    p.add_argument("--season", type=int, help="periods per season for the seasonal baseline "
                   "(default: one day's worth)")  # fmt: skip
    p.add_argument("--period", type=float, help="seconds per row (default: from the data)")
    p.add_argument("--plot", type=Path, help="write a PNG of forecast vs actual (with the "
                   "prediction band when the bundle has residual quantiles)")  # fmt: skip
    p.add_argument("--level", type=float, default=0.8, help="nominal coverage of the band, "
                   "between the measured quantiles (default 0.8: 10 %% to 90 %%)")  # fmt: skip
    p.add_argument("--report", type=Path, help="write the figures as JSON")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    return run_command("evaluate", _parser(), evaluate, argv)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    if not args.model.exists():
        raise ConvertError(f"model {args.model}: not found")
    if not 0 < args.level < 1:
        raise ConvertError(f"--level {args.level}: give the band's coverage between 0 and 1")
    model = _bundle(args.model) if args.model.suffix == ".tflite" else _keras(args)
    predict, targets, window, horizon = model.predict, model.targets, model.window, model.horizon
    series = load_series(args.data, model.features, targets, window + horizon, model.computed)
    period = args.period or series.period_s
    season = args.season or (round(86400 / period) if period else None)
    b = series.bounds[1]
    n = len(series.x)
    ends = np.arange(max(b - 1, window - 1), n - horizon)  # forecasts entirely in the test rows
    if len(ends) == 0:
        raise ConvertError(f"{args.data}: the test split has no complete forecast")
    inputs = series.x[ends[:, None] - window + 1 + np.arange(window)[None, :]]
    actual = series.y[ends[:, None] + 1 + np.arange(horizon)[None, :]]
    forecast = predict(inputs)
    results: dict[str, np.ndarray] = {"model": forecast}
    last = series.y[ends][:, None, :]
    results["last value"] = np.broadcast_to(last, actual.shape)
    if season is not None and season >= horizon and ends[0] + 1 - season >= 0:
        results[f"seasonal ({season} periods)"] = series.y[
            ends[:, None] + 1 + np.arange(horizon)[None, :] - season
        ]
    report: dict[str, Any] = {
        "model": str(args.model),
        "data": str(args.data),
        "test_rows": [int(b), int(n - 1)],
        "forecasts": len(ends),
        "targets": targets,
        "horizon": horizon,
        "period_s": period,
        "results": {},
    }
    print(f"test split: rows {b}-{n - 1} of {args.data.name}, {len(ends)} forecasts "
          f"of {horizon} steps; errors in target units")  # fmt: skip
    print(f"{'':24} {'MAE':>9} {'RMSE':>9}  MAE at step 1 .. {horizon}")
    for name, values in results.items():
        error = values - actual
        mae, rmse = float(np.abs(error).mean()), float(np.sqrt((error**2).mean()))
        by_step = np.abs(error).mean(axis=(0, 2))
        report["results"][name] = {"mae": mae, "rmse": rmse, "mae_by_step": by_step.tolist()}
        print(f"{name:24} {mae:9.4g} {rmse:9.4g}  {by_step[0]:.4g} .. {by_step[-1]:.4g}")
    report["skill"] = _skill(report["results"])
    band = _band(model, args.level, forecast, actual) if len(model.quantiles) > 1 else None
    if band is not None:
        report["band"] = _band_summary(band, model.quantiles)
    elif args.plot is not None:
        print("no band: the model has no residual quantiles (evaluate the bundle of a "
              "convert run given --calibration data with actuals)")  # fmt: skip
    if args.plot is not None:
        _plot(args.plot, (series, ends, actual), results, band, targets, args.model.name)
        print(f"wrote {args.plot}")
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _skill(results: dict[str, dict[str, Any]]) -> Optional[float]:
    """Print and return 1 - model MAE / the best naive baseline's MAE."""
    model_mae = results["model"]["mae"]
    naive = {k: v["mae"] for k, v in results.items() if k != "model"}
    best = min(naive, key=lambda k: naive[k])
    skill: Optional[float] = 1 - model_mae / naive[best] if naive[best] > 0 else None
    if skill is not None and skill >= 0:
        print(f"skill: {skill:.1%} lower MAE than the best naive baseline ({best})")
    elif skill is not None:
        print(f"skill: {-skill:.1%} HIGHER MAE than the naive baseline {best}: "
              "the model does not beat it")  # fmt: skip
    return skill


def _bundle(path: Path) -> Model:
    from sensorcast.agent.forecast.forecaster import Forecaster
    from sensorcast.agent.forecast.manifest import read_bundle
    from sensorcast.agent.forecast.runtime import load_runtime

    bundle = read_bundle(path)
    m = bundle.manifest
    forecaster = Forecaster(bundle, load_runtime())

    def predict(inputs: np.ndarray) -> np.ndarray:
        return np.stack([forecaster.predict(w).copy() for w in inputs])

    quantiles = {
        float(p): np.asarray(table, dtype=np.float64)
        for p, table in (m.accuracy.residual_quantiles if m.accuracy else {}).items()
    }
    return Model(
        predict, list(m.features), list(m.targets), m.window, m.horizon, m.computed, quantiles
    )


def _band(model: Model, level: float, forecast: np.ndarray, actual: np.ndarray) -> Band:
    """The band at ``level`` around each forecast, from the residual quantiles at the
    probabilities (1 - level) / 2 and (1 + level) / 2 (interpolated between the measured
    ones), and its empirical coverage on ``actual``."""
    probs = sorted(model.quantiles)
    low_p, high_p = (1 - level) / 2, (1 + level) / 2
    if low_p < probs[0] - 1e-9 or high_p > probs[-1] + 1e-9:
        widest = probs[-1] - probs[0]
        raise ConvertError(
            f"--level {level:g}: the bundle measured its residual quantiles from "
            f"{probs[0]:g} to {probs[-1]:g}; give a level up to {widest:g}"
        )
    table = np.stack([model.quantiles[p] for p in probs])  # (k, steps, targets)
    table = np.maximum.accumulate(table, axis=0)  # quantiles never decrease with probability
    flat = table.reshape(len(probs), -1)
    low = np.array([np.interp(low_p, probs, col) for col in flat.T]).reshape(table.shape[1:])
    high = np.array([np.interp(high_p, probs, col) for col in flat.T]).reshape(table.shape[1:])
    steps = forecast.shape[1]
    low, high = low[:steps], high[:steps]  # a rolled-out model has no more steps than this
    lower, upper = forecast + low[None], forecast + high[None]
    inside = (actual >= lower) & (actual <= upper)
    return Band(level, lower, upper, float(inside.mean()), inside.mean(axis=(0, 2)))


def _band_summary(band: Band, quantiles: dict[float, np.ndarray]) -> dict[str, Any]:
    """Print the band's coverage; its figures for the report."""
    by_step = band.by_step
    print(
        f"{band.level:.0%} band (the bundle's residual quantiles): covers {band.coverage:.1%} "
        f"of the actuals (step 1 .. {len(by_step)}: {by_step[0]:.1%} .. {by_step[-1]:.1%})"
    )
    return {
        "level": band.level,
        "source": "residual_quantiles",
        "probabilities": sorted(quantiles),
        "coverage": band.coverage,
        "coverage_by_step": by_step.tolist(),
        "mean_width_by_step": (band.upper - band.lower).mean(axis=(0, 2)).tolist(),
    }


def _keras(args: argparse.Namespace) -> Model:
    from sensorcast.convert.load import load_source
    from sensorcast.convert.norm import read_norm

    if not args.features:
        raise ConvertError("--features is required for a Keras model (a bundle knows them)")
    features = names(args.features, "--features")
    targets = names(args.targets, "--targets") if args.targets else features[:1]
    computed = parse_time_features(args.time_features) if args.time_features else {}
    # as train adds them: after the listed features, unless --features places them
    features += [name for name in computed if name not in features]
    norm_path = args.norm or args.model.with_suffix(".norm.json")
    if not norm_path.exists():
        raise ConvertError(f"no normalization file {norm_path}: pass --norm (train wrote it)")
    norm = read_norm(norm_path, [*features, *targets])
    source = load_source(args.model)
    if source.shape.n_features != len(features):
        raise ConvertError(
            f"model {args.model} takes {source.shape.n_features} inputs, not the "
            f"{len(features)} of {', '.join(features)}: give them all with --features "
            "(and --time-features for those computed from time, as train was given)"
        )
    f_mean = np.array([norm[f].mean for f in features])
    f_std = np.array([norm[f].std for f in features])
    t_mean = np.array([norm[t].mean for t in targets])
    t_std = np.array([norm[t].std for t in targets])
    shape = source.shape

    def predict(inputs: np.ndarray) -> np.ndarray:
        y = source.predict(((inputs - f_mean) / f_std).astype(np.float32))
        y = y.reshape(len(inputs), shape.horizon, len(targets))
        out: np.ndarray = y * t_std + t_mean
        return out

    return Model(predict, features, targets, shape.window, shape.horizon, computed, {})


def _plot(
    path: Path,
    data: tuple[Series, np.ndarray, np.ndarray],
    results: dict[str, np.ndarray],
    band: Optional[Band],
    targets: list[str],
    title: str,
) -> None:
    """Forecast (and band) vs actual over the test split; MAE (and coverage) per step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConvertError("--plot needs matplotlib: pip install 'sensorcast[plot]'") from exc
    series, ends, actual = data
    horizon = actual.shape[1]
    stamps = series.stamps
    hours = (stamps - stamps[ends[0]]) / 3600 if stamps is not None else np.arange(len(series.y))
    panels = 3 if band is not None else 2
    fig, axes = plt.subplots(panels, 1, figsize=(10, 2.4 + 2.3 * panels),
                             height_ratios=(2, 1, 1)[:panels])  # fmt: skip
    top, bottom = axes[0], axes[1]
    rows = np.arange(ends[0] + 1, ends[-1] + horizon + 1)
    top.plot(hours[rows], series.y[rows, 0], color="black", lw=1.2, label=f"actual {targets[0]}")
    forecast = results["model"]
    for step, color in ((0, "tab:blue"), (horizon - 1, "tab:orange")):
        at = hours[ends + step + 1]
        name = "next step" if step == 0 else f"{horizon} steps ahead"
        top.plot(at, forecast[:, step, 0], color=color, lw=1, label=f"forecast, {name}")
        if band is not None:
            top.fill_between(at, band.lower[:, step, 0], band.upper[:, step, 0], color=color,
                             alpha=0.18, lw=0, label=f"{band.level:.0%} band, {name} "
                             f"(covers {band.by_step[step]:.0%})")  # fmt: skip
    top.set_xlabel("hours into the test split" if stamps is not None else "row")
    top.set_ylabel(targets[0])
    top.set_title(f"{title}: forecast vs actual on the test split")
    top.legend(loc="upper right", fontsize=8, ncol=2 if band is not None else 1)
    steps = np.arange(1, horizon + 1)
    for name, values in results.items():
        by_step = np.abs(values - actual).mean(axis=(0, 2))
        bottom.plot(steps, by_step, marker="o", ms=3, label=name)
    bottom.set_xlabel("forecast step")
    bottom.set_ylabel("MAE")
    bottom.set_ylim(bottom=0)
    bottom.legend(fontsize=8)
    if band is not None:
        cov = axes[2]
        cov.axhline(band.level * 100, color="gray", ls="--", lw=1, label="nominal")
        cov.plot(steps, band.by_step * 100, marker="o", ms=3, color="tab:green",
                 label=f"empirical (all steps {band.coverage:.1%})")  # fmt: skip
        cov.set_xlabel("forecast step")
        cov.set_ylabel(f"{band.level:.0%} band coverage, %")
        cov.set_ylim(0, 100)
        cov.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
