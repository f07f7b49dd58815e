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
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from agent.errors import ModelError

__all__ = [
    "METADATA_NAME",
    "Accuracy",
    "Bundle",
    "Manifest",
    "Norm",
    "TensorQuant",
    "read_bundle",
    "read_manifest_bytes",
]

METADATA_NAME = "sensorcast.manifest"
FORMAT_VERSION = 1
QUANT_MODES = ("float32", "float16", "dynamic", "int8")


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


def _want(data: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    if key not in data:
        raise ModelError(f"manifest field {where}{key} is missing")
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ModelError(f"manifest field {where}{key} must be {kind.__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ModelError(f"manifest field {where}{key} must be finite")
    return value


def _names(data: dict[str, Any], key: str) -> tuple[str, ...]:
    raw = _want(data, key, list)
    if not raw or not all(isinstance(n, str) and n for n in raw):
        raise ModelError(f"manifest field {key} must be a non-empty list of names")
    if len(set(raw)) != len(raw):
        raise ModelError(f"manifest field {key} has duplicate names")
    return tuple(raw)


def _tensor_quant(data: dict[str, Any], key: str) -> TensorQuant:
    raw = data.get(key) or {}
    if not isinstance(raw, dict):
        raise ModelError(f"manifest field {key} must be an object")
    dtype = raw.get("dtype", "float32")
    if dtype not in ("float32", "int8"):
        raise ModelError(f"manifest field {key}.dtype must be float32 or int8, not {dtype!r}")
    scale = float(raw.get("scale", 0.0))
    zero_point = int(raw.get("zero_point", 0))
    if dtype == "int8" and not (math.isfinite(scale) and scale > 0):
        raise ModelError(f"manifest field {key}.scale must be > 0 for an int8 tensor")
    return TensorQuant(dtype=dtype, scale=scale, zero_point=zero_point)


def _manifest_from_dict(data: dict[str, Any]) -> Manifest:
    fmt = data.get("format", FORMAT_VERSION)
    if fmt != FORMAT_VERSION:
        raise ModelError(
            f"manifest format {fmt!r} is not supported by this agent (wants {FORMAT_VERSION}); "
            "upgrade sensorcast or reconvert the model"
        )
    window = _want(data, "window", int)
    horizon = _want(data, "horizon", int)
    period = _want(data, "period_s", float)
    if window < 1 or horizon < 1 or period <= 0:
        raise ModelError("manifest window, horizon and period_s must be positive")
    features = _names(data, "features")
    targets = _names(data, "targets")
    quant = _want(data, "quantization", str)
    if quant not in QUANT_MODES:
        raise ModelError(f"manifest quantization {quant!r} is not one of {', '.join(QUANT_MODES)}")
    norm_raw = data.get("normalization") or {}
    if not isinstance(norm_raw, dict):
        raise ModelError("manifest field normalization must be an object")
    norm: dict[str, Norm] = {}
    for name, entry in norm_raw.items():
        if not isinstance(entry, dict):
            raise ModelError(f"manifest field normalization.{name} must be an object")
        mean = _want(entry, "mean", float, f"normalization.{name}.")
        std = _want(entry, "std", float, f"normalization.{name}.")
        if std <= 0:
            raise ModelError(f"manifest field normalization.{name}.std must be > 0")
        norm[name] = Norm(mean=mean, std=std)
    if norm:
        missing = [c for c in (*features, *targets) if c not in norm]
        if missing:
            raise ModelError(f"manifest normalization has no entry for {', '.join(missing)}")
    acc_raw = data.get("accuracy")
    accuracy = None
    if isinstance(acc_raw, dict):
        accuracy = Accuracy(
            mae=_want(acc_raw, "mae", float, "accuracy."),
            max_abs=_want(acc_raw, "max_abs", float, "accuracy."),
            windows=_want(acc_raw, "windows", int, "accuracy."),
            data=str(acc_raw.get("data", "")),
            target_std=float(acc_raw.get("target_std", 0.0) or 0.0),
            forecast_mae=_forecast_mae(acc_raw.get("forecast_mae"), horizon, len(targets)),
        )
    versions = data.get("versions") or {}
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
        warnings=tuple(str(w) for w in data.get("warnings") or () if isinstance(w, str)),
        latency_ms=float(data.get("latency_ms", 0.0) or 0.0),
        batch=int(data.get("batch", 1) or 1),
        selection=str(data.get("selection", "")),
        format=fmt,
    )


def read_manifest_bytes(model: bytes) -> Optional[bytes]:
    """Return the raw manifest stored in a TFLite flatbuffer, or None if absent.

    Raises :class:`ModelError` if the bytes are not a TFLite model.
    """
    return read_metadata(model, METADATA_NAME)


def min_runtime_version(model: bytes) -> Optional[tuple[int, ...]]:
    """The converter's ``min_runtime_version`` metadata as a version tuple, if present."""
    raw = read_metadata(model, "min_runtime_version")
    if not raw:
        return None
    text = raw.split(b"\0", 1)[0].decode("ascii", errors="replace")
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return None


def _forecast_mae(raw: Any, horizon: int, targets: int) -> tuple[tuple[float, ...], ...]:
    """``accuracy.forecast_mae``: ``horizon`` rows of ``targets`` finite numbers, or empty."""
    if raw is None or raw == []:
        return ()
    try:
        rows = tuple(tuple(float(v) for v in row) for row in raw)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"manifest accuracy.forecast_mae: not a table of numbers ({exc})") from exc
    if len(rows) != horizon or any(len(r) != targets for r in rows):
        raise ModelError(
            f"manifest accuracy.forecast_mae: want {horizon} steps x {targets} targets"
        )
    if not all(math.isfinite(v) and v >= 0 for r in rows for v in r):
        raise ModelError("manifest accuracy.forecast_mae: values must be finite and >= 0")
    return rows


def read_metadata(model: bytes, name: str) -> Optional[bytes]:
    """The bytes of the TFLite metadata entry ``name``, or None if absent.

    Walks only the fields it needs (Model.metadata -> Buffer.data) with the
    ``flatbuffers`` runtime; raises :class:`ModelError` if the bytes are not a
    TFLite model.
    """
    from flatbuffers import encode, number_types, packer, table

    if len(model) < 8 or model[4:8] != b"TFL3":
        raise ModelError("not a TFLite model (no TFL3 identifier)")
    try:
        root = table.Table(bytearray(model), encode.Get(packer.uoffset, model, 0))
        meta_vec = _vector(root, 16)  # Model.metadata
        if meta_vec is None:
            return None
        meta_start, meta_len = meta_vec
        buf_vec = _vector(root, 12)  # Model.buffers
        for i in range(meta_len):
            meta = _table_at(root, meta_start + 4 * i)
            name_off = meta.Offset(4)  # Metadata.name
            if not name_off or meta.String(name_off + meta.Pos).decode("utf-8") != name:
                continue
            buf_off = meta.Offset(6)  # Metadata.buffer
            index = meta.Get(number_types.Uint32Flags, buf_off + meta.Pos) if buf_off else 0
            if buf_vec is None or index >= buf_vec[1]:
                raise ModelError(f"metadata {name} points past the model's buffers")
            buffer = _table_at(root, buf_vec[0] + 4 * index)
            data = _vector(buffer, 4)  # Buffer.data
            if data is None:
                return b""
            return bytes(model[data[0] : data[0] + data[1]])
    except (
        IndexError,
        TypeError,
        UnicodeDecodeError,
        ValueError,
        OverflowError,
        struct.error,
    ) as exc:
        raise ModelError(f"TFLite flatbuffer is damaged ({exc})") from exc
    return None


def _vector(tab: Any, voffset: int) -> Optional[tuple[int, int]]:
    off = tab.Offset(voffset)
    if not off:
        return None
    start = tab.Vector(off)
    length = tab.VectorLen(off)
    if start < 0 or length < 0 or start > len(tab.Bytes):
        raise ValueError("vector out of range")
    return start, length


def _table_at(parent: Any, pos: int) -> Any:
    from flatbuffers import table

    if pos + 4 > len(parent.Bytes):
        raise ValueError("table offset out of range")
    return table.Table(parent.Bytes, parent.Indirect(pos))


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


def read_bundle(path: Path) -> Bundle:
    """Read a bundle file; raise :class:`ModelError` with a fix if it is not one."""
    try:
        model = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(
            f"model {path}: file not found; check the path "
            "(relative paths are relative to the config file)"
        ) from exc
    except OSError as exc:
        raise ModelError(f"model {path}: cannot read it ({exc.strerror})") from exc
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
