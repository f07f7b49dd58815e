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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.fields import (
    MEASURE_MAX,
    RECURRENCES,
    Table,
    computed,
    measure,
    names,
    number,
    obj,
    ops,
    optional,
    quantiles,
    recurrence,
    show,
    table,
    verified_range,
    want,
)
from sensorcast.agent.forecast.tflite import (
    DEFAULT_MAX_BUNDLE_BYTES,
    min_runtime_version,
    read_metadata,
    read_model_file,
)

__all__ = [
    "DEFAULT_MAX_BUNDLE_BYTES", "FORMAT_VERSION", "METADATA_NAME", "RECURRENCES",
    "STATEFUL_FORMAT", "Accuracy", "Bundle", "Manifest", "Norm", "TargetError", "TensorQuant",
    "min_runtime_version", "read_bundle", "read_manifest_bytes", "read_model_file",
]  # fmt: skip

METADATA_NAME = "sensorcast.manifest"
FORMAT_VERSION = 1
#: Format 2: the model keeps state in variable tensors between invoke() calls (a fused LSTM),
#: to reset before each forecast; format-1 agents refuse it rather than carry state along.
STATEFUL_FORMAT = 2
SUPPORTED_FORMATS = (FORMAT_VERSION, STATEFUL_FORMAT)
QUANT_MODES = ("float32", "float16", "dynamic", "int8")
#: Naive baselines the converter measures a bundle against (``accuracy.baselines``).
BASELINES = ("last_value", "seasonal")

# Bounds on manifest numbers. Anything outside is a damaged or hostile bundle, refused when it
# is read, before a number can reach the hot path (period_s = 1e-300 made the window's slot
# arithmetic overflow on the first reading).
#: Sampling period, seconds: 1 ms .. 366 days.
PERIOD_S_MIN, PERIOD_S_MAX = 1e-3, 366 * 86400.0
#: Window and horizon, steps.
MAX_STEPS = 100_000
#: Windows per batched call.
MAX_BATCH = 4_096
#: Normalization, in the column's units: ``|mean| <= NORM_LIMIT`` and
#: ``1 / NORM_LIMIT <= std <= NORM_LIMIT``, so normalizing a reading stays well inside float32.
NORM_LIMIT = 1e12
#: Scale of an int8 tensor: ``1 / QUANT_SCALE_LIMIT .. QUANT_SCALE_LIMIT``.
QUANT_SCALE_LIMIT = 1e9


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
class TargetError:
    """One target's error against the Keras model, in that target's own units."""

    std: float  #: The target's std in the data: what its errors are judged against.
    mae: float  #: On the held-out windows.
    max_abs: float  #: On the held-out windows.
    max_abs_all: float = 0.0  #: On every window (calibration and held-out).
    #: On windows beyond the calibration data's range (shifted and scaled by 1 and 2 std).
    out_of_range_mae: float = 0.0
    out_of_range_max_abs: float = 0.0


@dataclass(frozen=True)
class Accuracy:
    """Error of the converted model against the Keras model, in target units."""

    mae: float
    max_abs: float
    windows: int
    data: str  # "calibration" (user's held-out windows) or "synthetic"
    target_std: float = 0.0  #: The targets' std the errors were judged against.
    #: The bundle's own forecast error against what actually happened in the held-out
    #: calibration data: MAE per step (rows) and target (columns), target units; empty
    #: when the data could not tell (no calibration CSV, or too short for the horizon).
    forecast_mae: Table = ()
    max_abs_all: float = 0.0  #: Largest error against Keras over every window, not only held-out.
    #: Error against Keras on windows beyond the calibration range (all targets).
    out_of_range_mae: float = 0.0
    out_of_range_max_abs: float = 0.0
    #: Each target's errors in its own units, by target name.
    per_target: dict[str, TargetError] = field(default_factory=dict)
    #: The Keras model's forecast error on the same windows, like ``forecast_mae``.
    keras_forecast_mae: Table = ()
    #: Naive baselines' forecast error on the same windows, like ``forecast_mae``, by name
    #: (``last_value``; ``seasonal``: the value one season earlier).
    baselines: dict[str, Table] = field(default_factory=dict)
    season: int = 0  #: Steps in the season of the ``seasonal`` baseline (0: not measured).
    #: ``1 - bundle MAE / best baseline MAE`` over every step and target (None: not measured);
    #: below 0 the bundle loses to a naive baseline.
    skill: Optional[float] = None
    #: Quantiles of the bundle's residuals (actual - forecast) like ``forecast_mae``, by
    #: probability (``"0.1"``...): where the agent's prediction intervals start.
    residual_quantiles: dict[str, Table] = field(default_factory=dict)


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
    #: The input range each feature was verified on, reading units: ``(low, high)`` by feature
    #: name (computed features are not listed). A window outside it is forecast but marked
    #: ``out_of_range``.
    verified_range: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: Inputs the agent computes itself, by feature name: a kind of
    #: :data:`~sensorcast.agent.forecast.timefeatures.TIME_KINDS`.
    computed: dict[str, str] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)  #: TFLite op histogram, by op name.
    recurrence: str = ""  #: One of :data:`RECURRENCES`.
    #: Written with ``--force`` past the converter's sanity bound; ``warnings`` say why.
    forced: bool = False
    format: int = FORMAT_VERSION

    @property
    def sensor_features(self) -> tuple[str, ...]:
        """The features a source must provide: every feature not computed."""
        return tuple(f for f in self.features if f not in self.computed)

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


def _tensor_quant(data: dict[str, Any], key: str) -> TensorQuant:
    raw = data.get(key) or {}
    if not isinstance(raw, dict):
        raise ModelError(f"manifest field {key} must be an object")
    dtype = raw.get("dtype", "float32")
    if dtype not in ("float32", "int8"):
        raise ModelError(f"manifest field {key}.dtype must be float32 or int8, not {show(dtype)}")
    where = f"{key}."
    if dtype == "int8":  # real = (q - zero_point) * scale: the scale divides and multiplies
        scale = number(raw, "scale", float, 1 / QUANT_SCALE_LIMIT, QUANT_SCALE_LIMIT, where)
    else:  # unused for a float tensor, but still a number
        scale = optional(raw, "scale", float, 0.0, 0.0, QUANT_SCALE_LIMIT, where)
    zero_point = optional(raw, "zero_point", int, 0, -128, 127, where)
    return TensorQuant(dtype=dtype, scale=scale, zero_point=zero_point)


def _norm(name: str, entry: Any) -> Norm:
    where = f"normalization.{name}."
    if not isinstance(entry, dict):
        raise ModelError(f"manifest field normalization.{name} must be an object")
    mean = number(entry, "mean", float, -NORM_LIMIT, NORM_LIMIT, where)
    std = want(entry, "std", float, where)
    if std <= 0:
        raise ModelError(f"manifest field {where}std = {show(std)} must be > 0")
    std = number(entry, "std", float, 1 / NORM_LIMIT, NORM_LIMIT, where)
    return Norm(mean=mean, std=std)


def _target_error(name: str, entry: Any) -> TargetError:
    where = f"accuracy.per_target.{name}."
    if not isinstance(entry, dict):
        raise ModelError(f"manifest field accuracy.per_target.{name} must be an object")
    return TargetError(
        std=measure(entry, "std", where),
        mae=measure(entry, "mae", where),
        max_abs=measure(entry, "max_abs", where),
        max_abs_all=measure(entry, "max_abs_all", where),
        out_of_range_mae=measure(entry, "out_of_range_mae", where),
        out_of_range_max_abs=measure(entry, "out_of_range_max_abs", where),
    )


def _accuracy(raw: dict[str, Any], horizon: int, targets: tuple[str, ...]) -> Accuracy:
    where = "accuracy."
    per_target = {
        str(k): _target_error(str(k), v) for k, v in obj(raw, "per_target", where).items()
    }
    unknown = [k for k in per_target if k not in targets]
    if unknown:
        raise ModelError(f"manifest accuracy.per_target names {unknown[0]!r}, not a target")
    baselines = {}
    for name, rows in obj(raw, "baselines", where).items():
        if name not in BASELINES:
            raise ModelError(
                f"manifest accuracy.baselines.{name}: not one of {', '.join(BASELINES)}"
            )
        baselines[name] = table(rows, horizon, len(targets), f"baselines.{name}")
    skill = raw.get("skill")
    return Accuracy(
        mae=number(raw, "mae", float, 0.0, MEASURE_MAX, where),
        max_abs=number(raw, "max_abs", float, 0.0, MEASURE_MAX, where),
        windows=number(raw, "windows", int, 0, 2**53, where),
        data=str(raw.get("data", "")),
        target_std=measure(raw, "target_std", where),
        forecast_mae=table(raw.get("forecast_mae"), horizon, len(targets), "forecast_mae"),
        max_abs_all=measure(raw, "max_abs_all", where),
        out_of_range_mae=measure(raw, "out_of_range_mae", where),
        out_of_range_max_abs=measure(raw, "out_of_range_max_abs", where),
        per_target=per_target,
        keras_forecast_mae=table(
            raw.get("keras_forecast_mae"), horizon, len(targets), "keras_forecast_mae"
        ),
        baselines=baselines,
        season=optional(raw, "season", int, 0, 0, MAX_STEPS, where),
        skill=None if skill is None else number(raw, "skill", float, -MEASURE_MAX, 1.0, where),
        residual_quantiles=quantiles(obj(raw, "residual_quantiles", where), horizon, len(targets)),
    )


def _manifest_from_dict(data: dict[str, Any]) -> Manifest:
    fmt = data.get("format", FORMAT_VERSION)
    if type(fmt) is not int or fmt not in SUPPORTED_FORMATS:  # type(): true == 1 in Python
        raise ModelError(
            f"manifest format {show(fmt)} is not supported by this agent "
            f"(knows {', '.join(map(str, SUPPORTED_FORMATS))}); upgrade sensorcast or "
            "reconvert the model"
        )
    window = number(data, "window", int, 1, MAX_STEPS)
    horizon = number(data, "horizon", int, 1, MAX_STEPS)
    period = want(data, "period_s", float)
    if period <= 0:
        raise ModelError(f"manifest field period_s = {show(period)} must be positive")
    period = number(data, "period_s", float, PERIOD_S_MIN, PERIOD_S_MAX)
    features = names(data, "features")
    targets = names(data, "targets")
    quant = want(data, "quantization", str)
    if quant not in QUANT_MODES:
        raise ModelError(
            f"manifest quantization {show(quant)} is not one of {', '.join(QUANT_MODES)}"
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
    accuracy = _accuracy(acc_raw, horizon, targets) if isinstance(acc_raw, dict) else None
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
        latency_ms=optional(data, "latency_ms", float, 0.0, 0.0, MEASURE_MAX, ""),
        batch=optional(data, "batch", int, 1, 1, MAX_BATCH, ""),
        selection=str(data.get("selection", "")),
        verified_range=verified_range(data, features),
        computed=computed(data, features),
        ops=ops(data),
        recurrence=recurrence(data),
        forced=data.get("forced") is True,
        format=fmt,
    )


def read_manifest_bytes(model: bytes) -> Optional[bytes]:
    """Return the raw manifest stored in a TFLite flatbuffer, or None if absent.

    Raises :class:`ModelError` if the bytes are not a TFLite model.
    """
    return read_metadata(model, METADATA_NAME)


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
