"""The model bundle: one .tflite file that carries its own manifest.

The manifest is JSON stored in the TFLite flatbuffer's standard ``metadata``
list under the name :data:`METADATA_NAME`; interpreters ignore it, so the
bundle is a plain TFLite model to every tool. Reading it needs only the
``flatbuffers`` package, never TensorFlow.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.tflite import (
    DEFAULT_MAX_BUNDLE_BYTES,
    min_runtime_version,
    read_metadata,
    read_model_file,
)

__all__ = [
    "DEFAULT_MAX_BUNDLE_BYTES",
    "METADATA_NAME",
    "Accuracy",
    "Bundle",
    "Manifest",
    "Norm",
    "TensorQuant",
    "min_runtime_version",
    "read_bundle",
    "read_manifest_bytes",
    "read_model_file",
]

METADATA_NAME = "sensorcast.manifest"
FORMAT_VERSION = 1
QUANT_MODES = ("float32", "float16", "dynamic", "int8")

# Bounds on manifest numbers. Anything outside is a damaged or hostile bundle, refused when it
# is read, before a number can reach the hot path (period_s = 1e-300 made the window's slot
# arithmetic overflow on the first reading).
#: Sampling period, seconds: 1 ms .. 366 days.
PERIOD_S_MIN, PERIOD_S_MAX = 1e-3, 366 * 86400.0
#: Window and horizon, steps.
MAX_STEPS = 100_000
#: Input features and targets, each.
MAX_COLUMNS = 1_000
#: Windows per batched call.
MAX_BATCH = 4_096
#: Normalization, in the column's units: ``|mean| <= NORM_LIMIT`` and
#: ``1 / NORM_LIMIT <= std <= NORM_LIMIT``, so normalizing a reading stays well inside float32.
NORM_LIMIT = 1e12
#: Scale of an int8 tensor: ``1 / QUANT_SCALE_LIMIT .. QUANT_SCALE_LIMIT``.
QUANT_SCALE_LIMIT = 1e9
#: Accuracy figures (target units) and latency (ms): finite, ``0 .. MEASURE_MAX``.
MEASURE_MAX = 1e30


@dataclass(frozen=True)
class Norm:
    """Normalization of one column: ``(x - mean) / std``, in the column's units."""

    mean: float
    std: float


@dataclass(frozen=True)
class TensorQuant:
    """How the interpreter's input or output tensor is typed.

    For an ``int8`` tensor, ``real = (q - zero_point) * scale``.
    """

    dtype: str = "float32"
    scale: float = 0.0
    zero_point: int = 0


@dataclass(frozen=True)
class Accuracy:
    """Error of the converted model against the Keras model, in target units."""

    mae: float
    max_abs: float
    windows: int
    data: str  # "calibration" (user's held-out windows) or "synthetic"
    target_std: float = 0.0  #: The targets' std the errors were judged against.
    #: The model's own forecast error against what actually happened in the held-out
    #: calibration data: MAE per step (rows) and target (columns), target units; empty
    #: when the data could not tell (no calibration CSV, or too short for the horizon).
    forecast_mae: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True)
class Manifest:
    """Everything the agent needs to run a bundle and nothing it must guess."""

    window: int
    features: tuple[str, ...]
    targets: tuple[str, ...]
    horizon: int
    period_s: float
    quantization: str
    input: TensorQuant = field(default_factory=TensorQuant)
    output: TensorQuant = field(default_factory=TensorQuant)
    normalization: dict[str, Norm] = field(default_factory=dict)
    accuracy: Optional[Accuracy] = None
    source_sha256: str = ""
    source_name: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    warnings: tuple[str, ...] = ()  #: What the converter noticed (e.g. a mode that did nothing).
    latency_ms: float = 0.0  #: Mean forecast time measured by the converter, on its host.
    batch: int = 1  #: Windows per call of the ``forecast_batch`` signature (1: none).
    selection: str = ""  #: Why this quantization mode was chosen.
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        """Serialize to canonical JSON (sorted keys)."""
        data = asdict(self)
        data["features"] = list(self.features)
        data["targets"] = list(self.targets)
        data["warnings"] = list(self.warnings)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse and validate; raise :class:`ModelError` naming the bad field."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ModelError(f"manifest is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ModelError("manifest is not a JSON object")
        return _manifest_from_dict(data)


def _show(value: Any) -> str:
    """A value for an error message: short, whatever the manifest put there."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _want(data: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    if key not in data:
        raise ModelError(f"manifest field {where}{key} is missing")
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any double: finite in JSON, not as a float
            raise ModelError(
                f"manifest field {where}{key} = {_show(data[key])} is out of range"
            ) from None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ModelError(f"manifest field {where}{key} = {_show(value)} must be {kind.__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ModelError(f"manifest field {where}{key} = {_show(value)} must be finite")
    return value


def _number(
    data: dict[str, Any], key: str, kind: type, low: float, high: float, where: str = ""
) -> Any:
    """``data[key]``, an int or finite float within ``low .. high`` (inclusive)."""
    value = _want(data, key, kind, where)
    if not low <= value <= high:
        unit = " s" if key.endswith("_s") else " ms" if key.endswith("_ms") else ""
        raise ModelError(
            f"manifest field {where}{key} = {_show(value)} is out of range "
            f"({low:.15g} .. {high:.15g}{unit})"
        )
    return value


def _optional(
    data: dict[str, Any], key: str, kind: type, default: Any, low: float, high: float, where: str
) -> Any:
    """Like :func:`_number` for a field older bundles may lack (absent or null: default)."""
    if data.get(key) is None:
        return default
    return _number(data, key, kind, low, high, where)


def _names(data: dict[str, Any], key: str) -> tuple[str, ...]:
    raw = _want(data, key, list)
    if not raw or not all(isinstance(n, str) and n for n in raw):
        raise ModelError(f"manifest field {key} must be a non-empty list of names")
    if len(raw) > MAX_COLUMNS:
        raise ModelError(f"manifest field {key} has {len(raw)} names, more than {MAX_COLUMNS}")
    if len(set(raw)) != len(raw):
        raise ModelError(f"manifest field {key} has duplicate names")
    return tuple(raw)


def _tensor_quant(data: dict[str, Any], key: str) -> TensorQuant:
    raw = data.get(key) or {}
    if not isinstance(raw, dict):
        raise ModelError(f"manifest field {key} must be an object")
    dtype = raw.get("dtype", "float32")
    if dtype not in ("float32", "int8"):
        raise ModelError(f"manifest field {key}.dtype must be float32 or int8, not {_show(dtype)}")
    where = f"{key}."
    if dtype == "int8":  # real = (q - zero_point) * scale: the scale divides and multiplies
        scale = _number(raw, "scale", float, 1 / QUANT_SCALE_LIMIT, QUANT_SCALE_LIMIT, where)
    else:  # unused for a float tensor, but still a number
        scale = _optional(raw, "scale", float, 0.0, 0.0, QUANT_SCALE_LIMIT, where)
    zero_point = _optional(raw, "zero_point", int, 0, -128, 127, where)
    return TensorQuant(dtype=dtype, scale=scale, zero_point=zero_point)


def _norm(name: str, entry: Any) -> Norm:
    where = f"normalization.{name}."
    if not isinstance(entry, dict):
        raise ModelError(f"manifest field normalization.{name} must be an object")
    mean = _number(entry, "mean", float, -NORM_LIMIT, NORM_LIMIT, where)
    std = _want(entry, "std", float, where)
    if std <= 0:
        raise ModelError(f"manifest field {where}std = {_show(std)} must be > 0")
    std = _number(entry, "std", float, 1 / NORM_LIMIT, NORM_LIMIT, where)
    return Norm(mean=mean, std=std)


def _accuracy(raw: dict[str, Any], horizon: int, targets: int) -> Accuracy:
    where = "accuracy."
    return Accuracy(
        mae=_number(raw, "mae", float, 0.0, MEASURE_MAX, where),
        max_abs=_number(raw, "max_abs", float, 0.0, MEASURE_MAX, where),
        windows=_number(raw, "windows", int, 0, 2**53, where),
        data=str(raw.get("data", "")),
        target_std=_optional(raw, "target_std", float, 0.0, 0.0, MEASURE_MAX, where),
        forecast_mae=_forecast_mae(raw.get("forecast_mae"), horizon, targets),
    )


def _manifest_from_dict(data: dict[str, Any]) -> Manifest:
    fmt = data.get("format", FORMAT_VERSION)
    if type(fmt) is not int or fmt != FORMAT_VERSION:  # type(): true == 1 in Python
        raise ModelError(
            f"manifest format {_show(fmt)} is not supported by this agent "
            f"(wants {FORMAT_VERSION}); upgrade sensorcast or reconvert the model"
        )
    window = _number(data, "window", int, 1, MAX_STEPS)
    horizon = _number(data, "horizon", int, 1, MAX_STEPS)
    period = _want(data, "period_s", float)
    if period <= 0:
        raise ModelError(f"manifest field period_s = {_show(period)} must be positive")
    period = _number(data, "period_s", float, PERIOD_S_MIN, PERIOD_S_MAX)
    features = _names(data, "features")
    targets = _names(data, "targets")
    quant = _want(data, "quantization", str)
    if quant not in QUANT_MODES:
        raise ModelError(
            f"manifest quantization {_show(quant)} is not one of {', '.join(QUANT_MODES)}"
        )
    norm_raw = data.get("normalization") or {}
    if not isinstance(norm_raw, dict):
        raise ModelError("manifest field normalization must be an object")
    norm = {name: _norm(name, entry) for name, entry in norm_raw.items()}
    if norm:
        missing = [c for c in (*features, *targets) if c not in norm]
        if missing:
            raise ModelError(f"manifest normalization has no entry for {', '.join(missing)}")
    acc_raw = data.get("accuracy")
    accuracy = _accuracy(acc_raw, horizon, len(targets)) if isinstance(acc_raw, dict) else None
    versions = data.get("versions") or {}
    warnings = data.get("warnings") or []
    return Manifest(
        window=window,
        features=features,
        targets=targets,
        horizon=horizon,
        period_s=period,
        quantization=quant,
        input=_tensor_quant(data, "input"),
        output=_tensor_quant(data, "output"),
        normalization=norm,
        accuracy=accuracy,
        source_sha256=str(data.get("source_sha256", "")),
        source_name=str(data.get("source_name", "")),
        versions={str(k): str(v) for k, v in versions.items()}
        if isinstance(versions, dict)
        else {},
        created=str(data.get("created", "")),
        warnings=tuple(w for w in warnings if isinstance(w, str))
        if isinstance(warnings, list)
        else (),
        latency_ms=_optional(data, "latency_ms", float, 0.0, 0.0, MEASURE_MAX, ""),
        batch=_optional(data, "batch", int, 1, 1, MAX_BATCH, ""),
        selection=str(data.get("selection", "")),
        format=fmt,
    )


def read_manifest_bytes(model: bytes) -> Optional[bytes]:
    """Return the raw manifest stored in a TFLite flatbuffer, or None if absent.

    Raises :class:`ModelError` if the bytes are not a TFLite model.
    """
    return read_metadata(model, METADATA_NAME)


def _forecast_mae(raw: Any, horizon: int, targets: int) -> tuple[tuple[float, ...], ...]:
    """``accuracy.forecast_mae``: ``horizon`` rows of ``targets`` finite numbers, or empty."""
    if raw is None or raw == []:
        return ()
    try:
        rows = tuple(tuple(float(v) for v in row) for row in raw)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ModelError(f"manifest accuracy.forecast_mae: not a table of numbers ({exc})") from exc
    if len(rows) != horizon or any(len(r) != targets for r in rows):
        raise ModelError(
            f"manifest accuracy.forecast_mae: want {horizon} steps x {targets} targets"
        )
    bad = next((v for r in rows for v in r if not (0 <= v <= MEASURE_MAX)), None)
    if bad is not None:  # nan fails every comparison, so it lands here too
        raise ModelError(
            f"manifest accuracy.forecast_mae: {_show(bad)} is out of range (0 .. {MEASURE_MAX:g})"
        )
    return rows


@dataclass(frozen=True)
class Bundle:
    """A model file with its manifest and identity."""

    path: Path
    manifest: Manifest
    model: bytes
    sha256: str

    @functools.cached_property
    def label(self) -> str:
        """``name@sha256-prefix``, the id that forecasts carry (once: every forecast asks)."""
        return f"{self.path.stem}@{self.sha256[:12]}"


def read_bundle(path: Path, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES) -> Bundle:
    """Read a bundle file of at most ``max_bytes`` bytes and validate its manifest.

    Raises :class:`ModelError` (starting ``model PATH:``) with a fix if it is not one: not a
    regular file, too large, not TFLite, no manifest, or a manifest field out of range.
    """
    model = read_model_file(path, max_bytes)
    try:
        raw = read_manifest_bytes(model)
    except ModelError as exc:
        raise ModelError(f"model {path}: {exc}; convert it with `sensorcast convert`") from exc
    if raw is None:
        raise ModelError(
            f"model {path}: TFLite file has no sensorcast manifest; "
            "make a bundle with `sensorcast convert MODEL.keras -o OUT.tflite`"
        )
    try:
        manifest = Manifest.from_json(raw.decode("utf-8", errors="replace"))
    except ModelError as exc:
        raise ModelError(f"model {path}: {exc}") from exc
    return Bundle(
        path=path, manifest=manifest, model=model, sha256=hashlib.sha256(model).hexdigest()
    )
