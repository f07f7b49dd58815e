"""``sensorcast train``: the course workflow done right, from a CSV to a Keras LSTM.

Chronological 70/20/10 split, normalization statistics from the training rows only (written
beside the model for ``convert --norm``), windows that never cross a split, an LSTM, early
stopping on the validation loss with the best weights restored, a progress bar per epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
from sensorcast.convert import ConvertError, run_command
from sensorcast.convert.calibrate import parse_time_features
from sensorcast.convert.dataset import load_series, windows

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensorcast train",
        description="Train an LSTM forecaster on a sensor CSV (needs the [convert] extra).",
    )
    p.add_argument("data", type=Path, help="CSV with a header: a ts column and the features")
    p.add_argument("--features", required=True, help="comma-separated input columns")
    p.add_argument("--targets", help="comma-separated columns to forecast (default: first feature)")
    p.add_argument("--window", type=int, required=True, help="past periods the model sees")
    p.add_argument("--horizon", type=int, required=True, help="future periods it forecasts")
    p.add_argument("--period", type=float, help="seconds per row (default: from the ts column)")
    p.add_argument("--time-features", metavar="CYCLES", help="add calendar inputs computed "
                   "from the ts column: day, week, year (comma-separated); each adds "
                   "<cycle>_sin and <cycle>_cos, which the agent computes too")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, required=True, help="model file (.keras)")
    p.add_argument("--norm-out", type=Path, help="where the normalization JSON goes "
                   "(default: MODEL with .norm.json)")  # fmt: skip
    p.add_argument("--units", type=int, default=32, help="LSTM units (default 32)")
    p.add_argument("--epochs", type=int, default=50, help="at most this many epochs")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience, epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    return run_command("train", _parser(), train, argv)


def names(text: Optional[str], what: str) -> list[str]:
    out = [n.strip() for n in (text or "").split(",") if n.strip()]
    if not out or len(set(out)) != len(out):
        raise ConvertError(f"{what} {text!r}: give distinct comma-separated column names")
    return out


def train(args: argparse.Namespace) -> Path:
    import keras

    if args.output.suffix != ".keras":
        raise ConvertError(f"-o {args.output}: the model file must end in .keras")
    if args.window < 1 or args.horizon < 1:
        raise ConvertError("--window and --horizon must be at least 1")
    features = names(args.features, "--features")
    targets = names(args.targets, "--targets") if args.targets else features[:1]
    computed = parse_time_features(args.time_features) if args.time_features else {}
    features += [name for name in computed if name not in features]
    series = load_series(args.data, features, targets, args.window + args.horizon, computed)
    period = args.period or series.period_s
    if period is None or not period > 0:
        raise ConvertError("--period SECONDS is required when the CSV has no ts column")
    norm = series.norm()
    f_mean = np.array([norm[f].mean for f in features])
    f_std = np.array([norm[f].std for f in features])
    t_mean = np.array([norm[t].mean for t in targets])
    t_std = np.array([norm[t].std for t in targets])

    def cut(part: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = series.part(part)
        inputs, future, _ = windows((x - f_mean) / f_std, (y - t_mean) / t_std,
                                    args.window, args.horizon)  # fmt: skip
        shape = (len(future), args.horizon) if len(targets) == 1 else future.shape
        return inputs.astype("float32"), future.reshape(shape).astype("float32")

    x_train, y_train = cut("train")
    x_val, y_val = cut("val")
    a, b = series.bounds
    logger.info(
        "%s: %d rows, every %g s; train rows 0-%d (%d windows), validation %d-%d (%d), "
        "test %d-%d (kept for `sensorcast evaluate`)",
        args.data.name, len(series.x), period, a - 1, len(x_train), a, b - 1, len(x_val),
        b, len(series.x) - 1,
    )  # fmt: skip

    keras.utils.set_random_seed(args.seed)
    out_units = args.horizon * len(targets)
    layers: list[object] = [
        keras.Input((args.window, len(features))),
        keras.layers.LSTM(args.units),
        keras.layers.Dense(out_units),
    ]
    if len(targets) > 1:
        layers.append(keras.layers.Reshape((args.horizon, len(targets))))
    model = keras.Sequential(layers, name="sensorcast_lstm")
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    started = time.monotonic()
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[
            keras.callbacks.EarlyStopping(patience=args.patience, restore_best_weights=True)
        ],
        # a progress bar on a terminal, one line per epoch in a log
        verbose=0 if args.quiet else (1 if sys.stdout.isatty() else 2),
    )
    val_loss = history.history["val_loss"]
    best = int(np.argmin(val_loss))
    val_mae = float(history.history["val_mae"][best]) * float(np.mean(t_std))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.output)
    norm_out = args.norm_out or args.output.with_suffix(".norm.json")
    body = {name: {"mean": n.mean, "std": n.std} for name, n in norm.items()}
    norm_out.write_text(json.dumps(body, indent=2) + "\n")
    time_flag = ",".join(f"{name}={kind}" for name, kind in computed.items())
    time_flag = f" --time-features {shlex.quote(time_flag)}" if computed else ""
    print(
        f"wrote {args.output} and {norm_out} in {time.monotonic() - started:.0f} s: "
        f"{len(val_loss)} epochs, best {best + 1} (validation MAE {val_mae:.4g} in target "
        f"units, averaged over the horizon)\nnext: sensorcast convert {args.output} -o "
        f"{args.output.with_suffix('.tflite')} --norm {norm_out} --features "
        f"{shlex.quote(','.join(features))} --targets {shlex.quote(','.join(targets))} "
        f"--period {period:g} --calibration {args.data}{time_flag}"
    )
    out: Path = args.output
    return out
