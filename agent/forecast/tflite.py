"""A TFLite model file on disk: read it safely, and find its metadata without TensorFlow.

Reading is bounded: the file's type and size are checked with ``fstat`` and its header
(the flatbuffer identifier ``TFL3`` at bytes 4..8) before the rest is read, so a
directory, a device such as ``/dev/zero``, a 2 GiB sparse file or a CSV given as a model
is refused with one line naming what it is, without reading it into memory.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path
from typing import Any, Optional

from sensorcast.agent.errors import ModelError

__all__ = [
    "DEFAULT_MAX_BUNDLE_BYTES",
    "TFLITE_IDENTIFIER",
    "min_runtime_version",
    "read_metadata",
    "read_model_file",
]

#: Largest bundle read by default, bytes (``[models] max_bytes``, ``info --max-bytes``).
DEFAULT_MAX_BUNDLE_BYTES = 64 * 1024 * 1024
#: A TFLite flatbuffer's file identifier, at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"

_NOT_A_FILE = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)
#: What a file that is not TFLite may be instead, by its first bytes: a hint, not a check.
_LOOKS_LIKE = (
    (b"PK\x03\x04", "a zip archive: a .keras model?"),
    (b"\x89HDF", "an HDF5 file: a .h5 Keras model?"),
)
_FIX = "give the .tflite bundle made by `sensorcast convert`"


def _kind(mode: int) -> Optional[str]:
    """What a non-regular file is (``"a directory"``...), or None for a regular file."""
    for test, name in _NOT_A_FILE:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def read_model_file(path: Path, max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES) -> bytes:
    """The bytes of the TFLite model file ``path``, at most ``max_bytes`` of them.

    Raises :class:`ModelError` (starting ``model PATH:``) if the path is missing, is not a
    regular file, is larger than ``max_bytes`` or does not start like a TFLite flatbuffer.
    Never reads more than ``max_bytes + 1`` bytes, whatever ``stat`` said.
    """
    where = f"model {path}"
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise block here for ever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise ModelError(
            f"{where}: file not found; check the path "
            "(relative paths are relative to the config file)"
        ) from exc
    except OSError as exc:  # e.g. a socket (ENXIO): say what it is when stat can tell
        try:
            kind = _kind(os.stat(path).st_mode)
        except OSError:
            kind = None
        if kind is not None:
            raise ModelError(f"{where}: is {kind}, not a model file; {_FIX}") from exc
        raise ModelError(f"{where}: cannot read it ({exc.strerror})") from exc
    try:
        info = os.fstat(fd)
        kind = _kind(info.st_mode)
        if kind is not None:
            raise ModelError(f"{where}: is {kind}, not a model file; {_FIX}")
        with open(fd, "rb", closefd=False) as fh:
            header = fh.read(8)
            _check_header(where, header)  # before the size: a CSV says "not a TFLite model"
            if info.st_size > max_bytes:
                raise ModelError(_too_big(where, info.st_size, max_bytes))
            fh.seek(0)
            model = fh.read(info.st_size + 1)  # one buffer of the file's size, +1 to see EOF
            if len(model) > info.st_size:  # it grew since fstat: read on, still bounded
                model += fh.read(max_bytes + 1 - len(model))
    except OSError as exc:
        raise ModelError(f"{where}: cannot read it ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)
    if len(model) > max_bytes:
        raise ModelError(_too_big(where, len(model), max_bytes))
    return model


def _check_header(where: str, header: bytes) -> None:
    if len(header) < 8:
        size = f"only {len(header)} bytes" if header else "the file is empty"
        raise ModelError(f"{where}: not a TFLite model ({size}); {_FIX}")
    if header[4:8] != TFLITE_IDENTIFIER:
        looks = next((what for magic, what in _LOOKS_LIKE if header.startswith(magic)), None)
        detail = f"it looks like {looks}" if looks else "no TFL3 identifier at bytes 4..8"
        raise ModelError(f"{where}: not a TFLite model ({detail}); {_FIX}")


def _too_big(where: str, size: int, max_bytes: int) -> str:
    return (
        f"{where}: is {size} bytes ({_human(size)}), more than the {max_bytes}-byte "
        f"({_human(max_bytes)}) limit for a model bundle; if it really is one, raise "
        "`[models] max_bytes` (or `sensorcast info --max-bytes`)"
    )


def _human(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} B"


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


def read_metadata(model: bytes, name: str) -> Optional[bytes]:
    """The bytes of the TFLite metadata entry ``name``, or None if absent.

    Walks only the fields it needs (Model.metadata -> Buffer.data) with the
    ``flatbuffers`` runtime; raises :class:`ModelError` if the bytes are not a
    TFLite model.
    """
    from flatbuffers import encode, number_types, packer, table

    if len(model) < 8 or model[4:8] != TFLITE_IDENTIFIER:
        raise ModelError("not a TFLite model (no TFL3 identifier)")
    try:
        # The flatbuffers runtime reads through struct.unpack_from: bytes do, no copy needed.
        root = table.Table(model, encode.Get(packer.uoffset, model, 0))
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
