"""Write the manifest into the TFLite flatbuffer's metadata, producing the bundle."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from sensorcast.agent.forecast.manifest import METADATA_NAME, Manifest, read_manifest_bytes
from sensorcast.convert import ConvertError

__all__ = ["embed_manifest", "write_atomic"]


def embed_manifest(model: bytes, manifest: Manifest) -> bytes:
    """Return ``model`` with ``manifest`` stored as metadata ``sensorcast.manifest``.

    A manifest already present is replaced. The result is read back to check it.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    payload = manifest.to_json().encode("utf-8")
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    existing = [m for m in (obj.metadata or []) if m.name.decode() == METADATA_NAME]
    if existing:
        obj.buffers[existing[0].buffer] = buffer
    else:
        obj.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(obj.buffers) - 1
        obj.metadata = [*(obj.metadata or []), entry]
    out = bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
    if read_manifest_bytes(out) != payload:
        raise ConvertError("the manifest did not read back from the written bundle")
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename: never half a bundle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a bundle is not a secret
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
