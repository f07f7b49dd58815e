"""Real bundle files with any manifest a test wants, hostile numbers included.

The converter's own ``embed_manifest`` (TensorFlow's flatbuffer tools, about 0.3 s a call)
writes the demo model once with a manifest padded to leave room; each bundle after that is
that file with the manifest JSON spliced into the same buffer and padded with spaces, which
JSON ignores. So a property test writes hundreds of real bundles cheaply, and every one goes
through the agent's whole reader: the file, the flatbuffer, the metadata, the JSON.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from typing import Any

from sensorcast.agent.forecast.manifest import read_bundle

from tests.support.paths import DEMO_DIR

__all__ = ["DEMO_BUNDLE", "bundle_bytes", "demo_manifest"]

DEMO_BUNDLE = DEMO_DIR / "room.tflite"
#: Bytes of JSON a manifest may take (the demo's takes about 1.3 KiB).
ROOM = 16 * 1024


def demo_manifest() -> dict[str, Any]:
    """The shipped demo bundle's manifest as a JSON object (a fresh copy to change)."""
    data: dict[str, Any] = json.loads(_demo_json())
    return data


@functools.lru_cache(maxsize=1)
def _demo_json() -> str:
    return read_bundle(DEMO_BUNDLE).manifest.to_json()


@functools.lru_cache(maxsize=1)
def _template() -> tuple[bytes, int]:
    """The demo model with a padded manifest, and where that manifest's bytes start."""
    from sensorcast.convert.bundle import embed_manifest  # writing metadata is the converter's job

    bundle = read_bundle(DEMO_BUNDLE)
    padded = replace(bundle.manifest, selection="")
    pad = ROOM - len(padded.to_json().encode())
    padded = replace(padded, selection="x" * pad)
    payload = padded.to_json().encode()
    model = embed_manifest(bundle.model, padded)
    start = model.index(payload)
    assert model.count(payload) == 1 and len(payload) == ROOM
    return model, start


def bundle_bytes(manifest: dict[str, Any] | str) -> bytes:
    """The demo model carrying ``manifest`` (an object, or JSON text used as it is)."""
    text = manifest if isinstance(manifest, str) else json.dumps(manifest, allow_nan=True)
    payload = text.encode()
    if len(payload) > ROOM:
        raise ValueError(f"manifest of {len(payload)} bytes does not fit in {ROOM}")
    model, start = _template()
    return model[:start] + payload.ljust(ROOM, b" ") + model[start + ROOM :]
