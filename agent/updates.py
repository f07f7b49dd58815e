"""Model updates over MQTT: ``<prefix>/<device>/model/set`` and the fleet-wide
``<prefix>/fleet/model/set``.

A request is JSON: ``{"stream": NAME, "sha256": HEX, "url": URL}`` or ``"data": BASE64``
instead of the URL, and ``"signature": BASE64`` (Ed25519 over the bundle's bytes) when
``[updates] public_key`` is set. In a worker thread the agent downloads (bounded in size and
time), verifies the digest (and signature), checks that the bundle fits the stream, keeps
the current file as ``<model>.previous`` and moves the new one in place atomically; the main
loop's model-file watch then swaps it in between two forecasts. Every outcome is published,
retained, on ``<prefix>/<device>/model/state``. A bad update changes nothing.

Securing it: allow only your controller to publish to ``.../model/set`` with broker ACLs
(Mosquitto ``acl_file``), use TLS, and set ``public_key`` so that only bundles you signed
are accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import queue
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from agent.config import Config, StreamConfig
from agent.errors import ModelError
from agent.forecast import check_fits
from agent.manifest import read_bundle

__all__ = ["ModelUpdater", "UpdateError"]

logger = logging.getLogger(__name__)


class UpdateError(Exception):
    """Why an update was refused (one line)."""


class ModelUpdater:
    """Takes requests from the MQTT thread, applies them one at a time in its own thread."""

    def __init__(
        self,
        cfg: Config,
        publish: Callable[[str, bytes], None],
        on_applied: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        prefix, device = cfg.mqtt.topic_prefix, cfg.device.id
        self.topics = (f"{prefix}/{device}/model/set", f"{prefix}/fleet/model/set")
        self.state_topic = f"{prefix}/{device}/model/state"
        self._publish = publish
        self._on_applied = on_applied
        self._requests: queue.Queue[Optional[bytes]] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._work, name="model-updates", daemon=True)
        self._thread.start()

    def handle(self, payload: bytes, _arrived: float) -> None:
        """MQTT thread: queue the request (a full queue refuses it, with a state message)."""
        try:
            self._requests.put_nowait(payload)
        except queue.Full:
            self._state({"status": "rejected", "reason": "too many updates pending"})

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=5)

    def _work(self) -> None:
        while True:
            payload = self._requests.get()
            if payload is None:
                return
            stream = None
            try:
                request = _parse(payload)
                stream = request["stream"]
                sha = self.apply(request)
            except UpdateError as exc:
                logger.error("model update refused: %s", exc)
                self._state({"stream": stream, "status": "rejected", "reason": str(exc)})
                continue
            except Exception as exc:  # never let an update kill the thread
                logger.exception("model update failed")
                self._state({"stream": stream, "status": "rejected", "reason": repr(exc)})
                continue
            self._state({"stream": stream, "status": "applied", "sha256": sha})
            self._on_applied(stream)

    def apply(self, request: dict[str, Any]) -> str:
        """Fetch, verify, check and install one bundle; returns its sha256."""
        u = self.cfg.updates
        sc = _stream(self.cfg, request["stream"])
        want = request["sha256"]
        data = request.get("data")
        if data is None:
            data = _download(request["url"], u.max_bytes, u.timeout_s)
        if len(data) > u.max_bytes:
            raise UpdateError(f"bundle is {len(data)} bytes, more than updates.max_bytes")
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise UpdateError(f"sha256 mismatch: got {got[:12]}, the request says {want[:12]}")
        if u.public_key is not None:
            _verify_signature(u.public_key, data, request.get("signature"))
        target = sc.model
        tmp = target.with_name(f".{target.name}.update")
        try:
            tmp.write_bytes(data)
            bundle = read_bundle(tmp)
            check_fits(bundle, sc.features, sc.name)
            if sc.features is None:
                current = read_bundle(target).manifest.features
                if bundle.manifest.features != current:
                    raise UpdateError(
                        f"bundle wants features {', '.join(bundle.manifest.features)}, the "
                        f"stream runs {', '.join(current)}"
                    )
            if target.exists():
                previous = target.with_name(target.name + ".previous")
                previous.write_bytes(target.read_bytes())
            os.replace(tmp, target)
        except ModelError as exc:
            raise UpdateError(str(exc)) from exc
        except OSError as exc:
            raise UpdateError(
                f"cannot write {target}: {exc.strerror or exc} (keep models where the agent "
                "may write, e.g. under its state directory, to update them over MQTT)"
            ) from exc
        finally:
            if tmp.exists():
                tmp.unlink()
        logger.info("model update: %s@%s installed for stream %s", target.stem, got[:12], sc.name)
        return got

    def _state(self, body: dict[str, Any]) -> None:
        body = {"device": self.cfg.device.id, "time": time.time(), **body}
        self._publish(self.state_topic, json.dumps(body).encode())


def _parse(payload: bytes) -> dict[str, Any]:
    try:
        request = json.loads(payload)
    except ValueError as exc:
        raise UpdateError(f"not JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise UpdateError("want a JSON object with stream, sha256, and url or data")
    for key in ("stream", "sha256"):
        if not isinstance(request.get(key), str):
            raise UpdateError(f"{key!r} missing or not a string")
    if ("url" in request) == ("data" in request):
        raise UpdateError("give exactly one of 'url' and 'data' (base64)")
    if "data" in request:
        try:
            request["data"] = base64.b64decode(request["data"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise UpdateError(f"'data' is not base64: {exc}") from exc
    elif not isinstance(request["url"], str):
        raise UpdateError("'url' must be a string")
    request["sha256"] = request["sha256"].lower()
    return request


def _stream(cfg: Config, name: str) -> StreamConfig:
    for sc in cfg.streams:
        if sc.name == name:
            return replace(sc)
    raise UpdateError(
        f"no stream {name!r} here (streams: {', '.join(s.name for s in cfg.streams)})"
    )


def _download(url: str, max_bytes: int, timeout_s: float) -> bytes:
    if not url.startswith(("https://", "http://", "file://")):
        raise UpdateError(f"url {url!r}: only https, http and file URLs")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            data: bytes = response.read(max_bytes + 1)
    except (OSError, ValueError) as exc:
        raise UpdateError(f"download of {url} failed: {exc}") from exc
    if len(data) > max_bytes:
        raise UpdateError(f"{url} is larger than updates.max_bytes ({max_bytes})")
    return data


def _verify_signature(public_key: Path, data: bytes, signature: Any) -> None:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError as exc:
        raise UpdateError(
            "updates.public_key needs the cryptography package: pip install cryptography"
        ) from exc
    if not isinstance(signature, str):
        raise UpdateError("'signature' (base64 Ed25519) is required: updates.public_key is set")
    try:
        key = load_pem_public_key(public_key.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise UpdateError(f"{public_key} is not an Ed25519 public key")
        key.verify(base64.b64decode(signature, validate=True), data)
    except InvalidSignature as exc:
        raise UpdateError("signature does not verify with updates.public_key") from exc
    except (OSError, ValueError, binascii.Error) as exc:
        raise UpdateError(f"cannot check the signature: {exc}") from exc
