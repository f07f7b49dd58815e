"""Load the user's Keras model and read its shapes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convert import ConvertError

__all__ = ["ModelShape", "file_sha256", "load_keras", "model_shape"]


@dataclass(frozen=True)
class ModelShape:
    """What the model's tensors say about the forecasting problem."""

    window: int  #: Time steps in an input window.
    n_features: int  #: Features per time step.
    horizon: int  #: Forecast steps.
    n_targets: int  #: Values per forecast step.


def file_sha256(path: Path) -> str:
    """Digest of a file, or of a directory's files in sorted order (SavedModel)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_keras(path: Path) -> Any:
    """Load a Keras 3 ``.keras`` or legacy ``.h5`` model without compiling it."""
    if not path.exists():
        raise ConvertError(f"model {path}: file not found")
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ConvertError(f"model {path}: expected a Keras .keras or .h5 file")
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file; all mean the same here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvertError(
            f"model {path}: Keras cannot load it ({first}); "
            "save it with model.save('model.keras') in Keras 3"
        ) from exc


def model_shape(model: Any, path: Path) -> ModelShape:
    """Read window, features, horizon and targets from the model's input/output shapes."""
    inputs = model.inputs
    outputs = model.outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConvertError(
            f"model {path}: has {len(inputs)} inputs and {len(outputs)} outputs; "
            "sensorcast needs one input (batch, window, features) and one output"
        )
    in_shape = tuple(inputs[0].shape)
    out_shape = tuple(outputs[0].shape)
    if len(in_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in in_shape[1:]):
        raise ConvertError(
            f"model {path}: input shape {in_shape} is not (batch, window, features) with a "
            "fixed window and feature count; build the model with keras.Input((WINDOW, FEATURES))"
        )
    if in_shape[0] not in (None, 1):
        raise ConvertError(f"model {path}: input batch size {in_shape[0]} must be free or 1")
    if len(out_shape) == 2 and isinstance(out_shape[1], int):
        horizon, targets = out_shape[1], 1
    elif len(out_shape) == 3 and all(isinstance(d, int) for d in out_shape[1:]):
        horizon, targets = out_shape[1], out_shape[2]
    else:
        raise ConvertError(
            f"model {path}: output shape {out_shape} is not (batch, horizon) or "
            "(batch, horizon, targets)"
        )
    return ModelShape(
        window=in_shape[1], n_features=in_shape[2], horizon=horizon, n_targets=targets
    )
