"""Load the user's model (Keras 3 .keras, legacy .h5, or a SavedModel directory)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from sensorcast.convert import ConvertError
from sensorcast.convert.usercode import IMPORTS_ENV, import_user_code, imported_specs

__all__ = [
    "IMPORTS_ENV",
    "RECURRENT_LAYERS",
    "ModelShape",
    "SourceModel",
    "file_sha256",
    "import_user_code",
    "load_source",
    "model_shape",
]

#: Layer types the converter and its tests cover; others are tried and named if they fail.
KNOWN_LAYERS = {
    "InputLayer", "LSTM", "GRU", "SimpleRNN", "Bidirectional", "Dropout", "SpatialDropout1D",
    "GaussianNoise", "Dense", "Conv1D", "MaxPooling1D", "AveragePooling1D",
    "GlobalAveragePooling1D",
    "Flatten", "Reshape", "Normalization", "BatchNormalization", "LayerNormalization", "Activation",
    "TimeDistributed", "Permute", "Concatenate", "Add", "RNN", "LSTMCell",
}  # fmt: skip
#: Layer classes that make a model recurrent (cells too: subclassed models loop over them).
RECURRENT_LAYERS = frozenset(
    {"LSTM", "GRU", "SimpleRNN", "RNN", "LSTMCell", "GRUCell", "SimpleRNNCell", "ConvLSTM1D"}
)
#: How the user fixes a model Keras cannot rebuild, whatever the cause (``{w}``, ``{f}``:
#: window and features): TFLite converts a SavedModel traced with a fixed batch of 1.
_EXPORT_FIX = (
    "or export a SavedModel with a fixed batch of 1 and convert that directory: "
    "model.export(DIR, input_signature=[tf.TensorSpec((1, {w}, {f}), tf.float32)])"
)
#: The wrapper that turns a two-input model into the one-input model sensorcast needs.
TWO_INPUTS_FIX = (
    "concatenate the inputs into one (window, features) input in a wrapper model and convert "
    "that: x = keras.Input((WINDOW, F1 + F2)); y = model([x[..., :F1], x[..., F1:]]); "
    "keras.Model(x, y).save('one_input.keras') (README: two-input models)"
)


@dataclass(frozen=True)
class ModelShape:
    """What the model's tensors say about the forecasting problem."""

    window: int  #: Time steps in an input window.
    n_features: int  #: Features per time step.
    horizon: int  #: Forecast steps.
    n_targets: int  #: Values per forecast step.


@dataclass
class SourceModel:
    """The model being converted: what it is, its shape, and how to run it for reference."""

    path: Path
    kind: str  #: "keras" or "savedmodel".
    shape: ModelShape
    handle: Any  #: The Keras model, or the SavedModel's serving function.
    layers: list[tuple[str, str]]  #: (name, class) of every layer, wrappers' inner ones too.

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Reference outputs for model-input windows, as ``(n, horizon, targets)``."""
        x = x.astype(np.float32)
        if self.kind == "keras":
            y = np.asarray(self.handle.predict(x, batch_size=256, verbose=0))
        else:
            import tensorflow as tf

            fn, name, batch = self.handle
            step = batch or 256
            parts = [
                next(iter(fn(**{name: tf.constant(x[i : i + step])}).values())).numpy()
                for i in range(0, len(x), step)
            ]
            y = np.concatenate(parts)
        return y.reshape(len(x), self.shape.horizon, self.shape.n_targets).astype(np.float64)

    def recurrent(self) -> bool:
        """Whether the model has a recurrent layer (for a SavedModel: a loop or a layer
        named like one in its graph)."""
        if self.kind == "keras":
            return any(cls in RECURRENT_LAYERS for _, cls in self.layers)
        fn = self.handle[0]
        graph = fn.graph.as_graph_def()
        nodes = [n for f in graph.library.function for n in f.node_def] + list(graph.node)
        return any(
            n.op in ("While", "StatelessWhile") or re.search(r"lstm|gru|rnn", n.name, re.I)
            for n in nodes
        )

    def layer_named_in(self, message: str) -> Optional[tuple[str, str]]:
        """The layer a converter message points at (it names ops by layer scope), if any."""
        scopes = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", message))
        for name, cls in self.layers:
            if name in scopes or re.sub(r"_\d+$", "", name) in {
                re.sub(r"_\d+$", "", s) for s in scopes
            }:
                return name, cls
        return None


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


def load_source(path: Path) -> SourceModel:
    """Load a model for conversion; raise :class:`ConvertError` with the fix if it cannot be."""
    if not path.exists():
        raise ConvertError(f"model {path}: file not found")
    if path.is_dir():
        return _load_saved_model(path)
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ConvertError(
            f"model {path}: expected a Keras .keras or .h5 file, or a SavedModel directory"
        )
    model = _load_keras(path)
    layers = list(_walk_layers(model))
    _check_layers(model, path)
    return SourceModel(path, "keras", model_shape(model, path), model, layers)


def _load_keras(path: Path) -> Any:
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file; all mean the same here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        lambdas = _config_layers(path, "Lambda")
        if lambdas:
            raise ConvertError(
                f"model {path}: layer {lambdas[0]!r} (Lambda) holds Python code that Keras will "
                "not load safely and TFLite cannot convert reliably; replace it with built-in "
                "layers or a registered custom layer"
            ) from exc
        raise ConvertError(
            f"model {path}: Keras cannot load it ({_load_hint(path, str(exc), first)})"
        ) from exc


def _load_hint(path: Path, message: str, first: str) -> str:
    """What went wrong loading a .keras file, and the fix that works for it."""
    config = _read_config(path)
    shape = (config.get("build_config") or {}).get("input_shape") or []
    dims = shape[1:] if isinstance(shape, list) and len(shape) == 3 else ["WINDOW", "FEATURES"]
    export = _EXPORT_FIX.format(w=dims[0], f=dims[1])
    unknown = re.search(
        r"(?:Could not locate|Unknown) (?:class|layer|object)[^']*'([^']+)'", message
    )
    imports = imported_specs()
    if unknown:
        cls = unknown.group(1)
        if imports:
            return (
                f"class {cls!r} is not defined by --import {', '.join(imports)}; import the module "
                f"that defines it, {export}"
            )
        return (
            f"class {cls!r} is the model's own code: pass --import MODULE_OR_FILE naming the "
            "module that defines it (decorated with @keras.saving.register_keras_serializable; "
            f"a subclassed model also needs get_config), {export}"
        )
    if imports and re.search(r"from_config|__init__\(\)|get_config|deserializ", message):
        return (
            f"{first[:300]}; the class cannot be rebuilt from its saved config: give it a "
            f"get_config() that returns its __init__ arguments and save it again, {export}"
        )
    if config:  # a Keras 3 archive already: saving it again would not help
        return (
            f"{first[:300]}; if the model uses code of its own, pass --import MODULE_OR_FILE "
            f"naming the module that defines it, {export}"
        )
    return f"{first[:300]}; save it with model.save('model.keras') in Keras 3, {export}"


def _read_config(path: Path) -> dict[str, Any]:
    """The .keras file's config.json (the model's class, layers and build shape), or {}."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}
    return config if isinstance(config, dict) else {}


def _config_layers(path: Path, class_name: str) -> list[str]:
    """Names of the layers of ``class_name`` in a .keras file's config, read without Keras."""
    config = _read_config(path)
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == class_name and isinstance(node.get("config"), dict):
                found.append(str(node["config"].get("name", "?")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def _walk_layers(model: Any) -> Any:
    for layer in getattr(model, "layers", []):
        yield layer.name, type(layer).__name__
        for attr in ("layer", "forward_layer", "backward_layer"):
            inner = getattr(layer, attr, None)
            if inner is not None and hasattr(inner, "name"):
                yield inner.name, type(inner).__name__
        if hasattr(layer, "layers"):
            yield from _walk_layers(layer)


def _check_layers(model: Any, path: Path) -> None:
    """Refuse layers that cannot work on the device, naming them and the fix."""
    for layer in getattr(model, "layers", []):
        cls = type(layer).__name__
        where = f"model {path}: layer {layer.name!r} ({cls})"
        if getattr(layer, "stateful", False):
            raise ConvertError(
                f"{where} is stateful: the agent feeds whole windows, so state would leak "
                "between forecasts; rebuild it with stateful=False and copy the weights"
            )
        if cls == "Lambda":
            raise ConvertError(
                f"{where} holds Python code that cannot be converted reliably; replace it with "
                "built-in layers or a registered custom layer"
            )
        if hasattr(layer, "layers"):
            _check_layers(layer, path)


def _load_saved_model(path: Path) -> SourceModel:
    import tensorflow as tf

    if not (path / "saved_model.pb").exists():
        raise ConvertError(f"model {path}: a directory but not a SavedModel (no saved_model.pb)")
    try:
        loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
    except (KeyError, ValueError, OSError) as exc:
        raise ConvertError(
            f"model {path}: cannot load a serving_default signature ({exc}); "
            "export it with model.export(DIR)"
        ) from exc
    inputs = fn.structured_input_signature[1]
    outputs = fn.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        fix = f"; {TWO_INPUTS_FIX}" if len(inputs) > 1 else ""
        raise ConvertError(
            f"model {path}: the serving signature has {len(inputs)} inputs and {len(outputs)} "
            f"outputs; sensorcast needs one of each{fix}"
        )
    name, spec = next(iter(inputs.items()))
    out_spec = next(iter(outputs.values()))
    shape = _shape(tuple(spec.shape), tuple(out_spec.shape), path)
    # Keep the loaded object alive with the function (variables belong to it).
    src = SourceModel(path, "savedmodel", shape, (fn, name, spec.shape[0]), [])
    src._loaded = loaded  # type: ignore[attr-defined]
    return src


def model_shape(model: Any, path: Path) -> ModelShape:
    """Read window, features, horizon and targets from a Keras model's input/output shapes."""
    inputs = getattr(model, "inputs", None)  # a subclassed model has none: AttributeError
    outputs = getattr(model, "outputs", None)
    if inputs is None or outputs is None:
        return _subclassed_shape(model, path)
    if len(inputs) != 1 or len(outputs) != 1:
        fix = f"; {TWO_INPUTS_FIX}" if len(inputs) > 1 else ""
        raise ConvertError(
            f"model {path}: has {len(inputs)} inputs and {len(outputs)} outputs; "
            f"sensorcast needs one input (batch, window, features) and one output{fix}"
        )
    return _shape(tuple(inputs[0].shape), tuple(outputs[0].shape), path)


def _subclassed_shape(model: Any, path: Path) -> ModelShape:
    """A subclassed model's shapes: the input from the shape it was built with, the output
    from one forward pass on zeros."""
    build = model.get_build_config() or {}
    shape = build.get("input_shape")
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3):
        raise ConvertError(
            f"model {path}: a subclassed model ({type(model).__name__}) saved without an input "
            "shape (batch, window, features); call it on a batch of windows before saving"
        )
    in_shape = (None, *shape[1:])
    try:
        out = model(np.zeros((1, *shape[1:]), np.float32), training=False)
    except Exception as exc:  # the user's call(): any error means it cannot run one window
        raise ConvertError(
            f"model {path}: {type(model).__name__} cannot forecast one window of shape "
            f"{(1, *shape[1:])} ({type(exc).__name__}: {str(exc).strip()[:200]})"
        ) from exc
    return _shape(in_shape, (None, *tuple(out.shape)[1:]), path)


def _shape(in_shape: tuple[Any, ...], out_shape: tuple[Any, ...], path: Path) -> ModelShape:
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
            "(batch, horizon, targets); end the model with Dense(H) or Dense(H*k) + Reshape((H, k))"
        )
    return ModelShape(
        window=in_shape[1], n_features=in_shape[2], horizon=horizon, n_targets=targets
    )
