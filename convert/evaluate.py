"""``sensorcast evaluate``: a model's forecasts on the test split against naive baselines.

Works on a Keras model (needs TensorFlow and the normalization JSON written by ``train``)
or on a bundle (runs it through the agent's own forecaster: no TensorFlow, so it also runs
on the device). The test split is the last 10 % of the CSV's rows, as ``train`` left it;
every window whose forecast steps all fall in it counts. Baselines: the last value carried
forward, and the value one season earlier (``--season`` periods, default one day). With
``--plot`` (matplotlib, the ``[plot]`` extra) it draws forecast against actual and the
error per step, for a person to look at.
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
    p.add_argument("--plot", type=Path, help="write a PNG of forecast vs actual")
    p.add_argument("--report", type=Path, help="write the figures as JSON")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    return run_command("evaluate", _parser(), evaluate, argv)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    if not args.model.exists():
        raise ConvertError(f"model {args.model}: not found")
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
    model_mae = report["results"]["model"]["mae"]
    naive = {k: v["mae"] for k, v in report["results"].items() if k != "model"}
    best = min(naive, key=lambda k: naive[k])
    report["skill"] = 1 - model_mae / naive[best] if naive[best] > 0 else None
    skill = report["skill"]
    if skill is not None and skill >= 0:
        print(f"skill: {skill:.1%} lower MAE than the best naive baseline ({best})")
    elif skill is not None:
        print(f"skill: {-skill:.1%} HIGHER MAE than the naive baseline {best}: "
              "the model does not beat it")  # fmt: skip
    if args.plot is not None:
        _plot(args.plot, series, ends, actual, results, targets, horizon, args.model.name)
        print(f"wrote {args.plot}")
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _bundle(path: Path) -> Model:
    from sensorcast.agent.forecast.forecaster import Forecaster
    from sensorcast.agent.forecast.manifest import read_bundle
    from sensorcast.agent.forecast.runtime import load_runtime

    bundle = read_bundle(path)
    m = bundle.manifest
    forecaster = Forecaster(bundle, load_runtime())

    def predict(inputs: np.ndarray) -> np.ndarray:
        return np.stack([forecaster.predict(w).copy() for w in inputs])

    return Model(predict, list(m.features), list(m.targets), m.window, m.horizon, m.computed)


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

    return Model(predict, features, targets, shape.window, shape.horizon, computed)


def _plot(
    path: Path,
    series: Series,
    ends: np.ndarray,
    actual: np.ndarray,
    results: dict[str, np.ndarray],
    targets: list[str],
    horizon: int,
    title: str,
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConvertError("--plot needs matplotlib: pip install 'sensorcast[plot]'") from exc
    stamps = series.stamps
    hours = (stamps - stamps[ends[0]]) / 3600 if stamps is not None else np.arange(len(series.y))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), height_ratios=(2, 1))
    rows = np.arange(ends[0] + 1, ends[-1] + horizon + 1)
    top.plot(hours[rows], series.y[rows, 0], color="black", lw=1.2, label=f"actual {targets[0]}")
    forecast = results["model"]
    top.plot(hours[ends + 1], forecast[:, 0, 0], color="tab:blue", lw=1,
             label="forecast, next step")  # fmt: skip
    top.plot(hours[ends + horizon], forecast[:, -1, 0], color="tab:orange", lw=1,
             label=f"forecast, {horizon} steps ahead")  # fmt: skip
    top.set_xlabel("hours into the test split" if stamps is not None else "row")
    top.set_ylabel(targets[0])
    top.set_title(f"{title}: forecast vs actual on the test split")
    top.legend(loc="upper right", fontsize=8)
    steps = np.arange(1, horizon + 1)
    for name, values in results.items():
        by_step = np.abs(values - actual).mean(axis=(0, 2))
        bottom.plot(steps, by_step, marker="o", ms=3, label=name)
    bottom.set_xlabel("forecast step")
    bottom.set_ylabel("MAE")
    bottom.set_ylim(bottom=0)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
