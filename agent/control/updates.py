"""Model updates over MQTT: ``<prefix>/<device>/model/set`` and the fleet-wide
``<prefix>/fleet/model/set``.

A request is JSON: ``{"stream": NAME, "sha256": HEX, "url": URL}`` or ``"data": BASE64``
instead of the URL, and ``"signature": BASE64`` (Ed25519 over the bundle's bytes) when
``[updates] public_key`` is set. Every outcome is published, retained, on
``<prefix>/<device>/model/state``. A refused update changes nothing.

Closed by default: requests are applied only when the device's own config sets
``public_key`` (signed bundles only) or ``allow_unsigned = true``. In a worker thread the
agent then downloads (https; plain http only for signed bundles; bounded in size, and by
``timeout_s`` for the whole download), verifies the digest (and signature), checks the
bundle as the agent checks a model at start, refuses one older than the running model
(manifest ``created``) unless ``allow_downgrade``, keeps the current file as
``<model>.previous`` and moves the new one in place atomically; the main loop then swaps it
in between two forecasts, and puts ``.previous`` back if the new model fails in use
(:func:`restore_previous`). ``"shadow": true`` installs the bundle as the stream's shadow
(:func:`~sensorcast.agent.control.shadow_files.shadow_path`) instead, under the same rules (no
``.previous``; "older" means older than the live model). An MQTT 5 request's response
topic gets the state message for it too, with the request's correlation data.

``"action": "promote"`` and ``"drop_shadow"`` (:mod:`.actions`) promote or remove the
stream's shadow by its sha256 instead; every state message carries the request's
``"action"`` and its ``"id"``, if it gave one.
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
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from sensorcast.agent.config import Config, StreamConfig
from sensorcast.agent.control.actions import drop_shadow, echo, head, parse, promote_shadow
from sensorcast.agent.control.model_files import (
    keep_previous,
    refuse_older,
    replace_file,
    restore_previous,
    write_synced,
)
from sensorcast.agent.control.shadow_files import shadow_path
from sensorcast.agent.errors import ModelError, UpdateError
from sensorcast.agent.forecast.forecaster import check_fits
from sensorcast.agent.forecast.manifest import Bundle, read_bundle
from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.publish.mqtt5 import Reply
from sensorcast.agent.publish.topics import Topics

__all__ = [
    "CLOSED", "ModelUpdater", "UpdateError", "keep_previous", "replace_file", "restore_previous",
    "write_synced",
]  # fmt: skip

logger = logging.getLogger(__name__)

CLOSED = (
    "model updates are closed on this device: set updates.public_key (to accept bundles "
    "signed with its key) or updates.allow_unsigned = true in its config"
)

_FAILED = (
    "bundle {sha} was rolled back after it failed in use here; it is not applied again "
    "before the agent restarts"
)
ECHO_MAX_BYTES = 4096  #: A request refused on a full queue longer than this echoes nothing.


def _default_check(sc: StreamConfig) -> Bundle:
    bundle = read_bundle(sc.model)
    check_fits(bundle, sc.features, sc.name)
    return bundle


class ModelUpdater:
    """Takes requests from the MQTT thread, applies them one at a time in its own thread.

    ``check(stream config)`` loads a bundle as the agent would at start (the service passes
    its own loader) and raises :class:`ModelError` if it would not run; ``on_applied(stream,
    sha256)`` is called after a bundle was installed live or a shadow promoted (the agent
    swaps it in, on trial), ``on_shadow(stream)`` after one was installed as a shadow or a
    shadow dropped (the agent looks at the shadow file again). ``reply(topic, body,
    correlation)`` publishes a request's answer to its MQTT 5 response topic.
    """

    def __init__(
        self,
        cfg: Config,
        publish: Callable[[str, bytes], None],
        on_applied: Callable[[str, str], None],
        check: Callable[[StreamConfig], Bundle] = _default_check,
        on_shadow: Callable[[str], None] = lambda _stream: None,
        reply: Optional[Callable[[str, bytes, Optional[bytes]], None]] = None,
    ) -> None:
        self.cfg = cfg
        topics = Topics(cfg.mqtt.topic_prefix, cfg.device.id)
        self.topics = (topics.model_set, topics.fleet_model_set)
        self.state_topic = topics.model_state
        self._publish = publish
        self._on_applied = on_applied
        self._on_shadow = on_shadow
        self._reply = reply
        self._check = check
        self._log = RateLimitedLog(logger)
        self._failed: set[str] = set()  #: sha256 of bundles rolled back after failing in use.
        #: Stream -> the sha256 a request last made live, and that request's action and id.
        self._trials: dict[str, tuple[str, dict[str, Any]]] = {}
        self._failed_lock = threading.Lock()
        self._requests: queue.Queue[Optional[tuple[bytes, Optional[Reply]]]]
        self._requests = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._work, name="model-updates", daemon=True)
        self._thread.start()

    def handle(self, payload: bytes, _arrived: float, reply: Optional[Reply] = None) -> None:
        """MQTT thread: queue the request (a full queue refuses it, with a state message);
        ``reply``: its MQTT 5 response topic and correlation data."""
        try:
            self._requests.put_nowait((payload, reply))
        except queue.Full:
            # Not a bundle's megabytes parsed on the loop's turn just to echo its id.
            said = echo(payload) if len(payload) <= ECHO_MAX_BYTES else {}
            self._state({**said, "status": "rejected", "reason": "too many updates pending"}, reply)

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=5)

    def rolled_back(self, stream: str, sha256: str, reason: str, restored: str) -> None:
        """The main loop put ``.previous`` back: report it (with the action and id of the
        request that made it live, if one did), and never apply that bundle again (until a
        restart), so a retained request cannot loop."""
        with self._failed_lock:
            self._failed.add(sha256)
            made, asked = self._trials.get(stream, ("", {}))
        asked = asked if made == sha256 else {}  # else: not a request's (auto promotion)
        self._state(
            {"stream": stream, "status": "rolled_back", "sha256": sha256, "reason": reason,
             "model": restored, **asked}
        )  # fmt: skip

    def _work(self) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                return
            payload, reply = item
            if self.cfg.updates.mode == "closed":  # refused before anything is looked at
                self._refused(echo(payload), CLOSED, reply)
            else:
                self._serve(payload, reply)

    def _serve(self, payload: bytes, reply: Optional[Reply]) -> None:
        """Carry out one request and publish its outcome; never raises."""
        said: Optional[dict[str, Any]] = None  # what the outcome repeats of the request
        url = None
        try:
            request = parse(payload)
            said, url = head(request), request.get("url")
            body, then = self._carry_out(request, said)
        except UpdateError as exc:
            self._refused(said or echo(payload), _scrub(str(exc), url), reply)
            return
        except Exception as exc:  # never let an update kill the thread
            reason = _scrub(f"{type(exc).__name__}: {exc}", url)
            logger.error("model update failed: %s", reason)
            self._state({**(said or echo(payload)), "status": "rejected", "reason": reason}, reply)
            return
        self._state({**said, "status": "applied", **body}, reply)
        then()

    def _carry_out(
        self, request: dict[str, Any], said: dict[str, Any]
    ) -> tuple[dict[str, Any], Callable[[], None]]:
        """The applied state's fields, and what to tell the agent once it is published."""
        stream, want, action = request["stream"], request["sha256"], request["action"]
        if action == "install":
            sha = self.apply(request)
            if request.get("shadow") is True:
                return {"sha256": sha, "shadow": True}, lambda: self._on_shadow(stream)
            return {"sha256": sha}, lambda: self._live(stream, sha, said)
        sc, most = _stream(self.cfg, stream), self.cfg.models.max_bytes
        note = f"model/set request {said['id']!r}" if "id" in said else "model/set request"
        if action == "drop_shadow":
            return drop_shadow(sc, want, most, note), lambda: self._on_shadow(stream)
        with self._failed_lock:
            failed = want in self._failed
        if failed:
            raise UpdateError(_FAILED.format(sha=want[:12]))
        allow = self.cfg.updates.allow_downgrade
        body, swap = promote_shadow(sc, want, self._check, most, allow, note)
        return body, (lambda: self._live(stream, want, said)) if swap else (lambda: None)

    def _live(self, stream: str, sha256: str, said: dict[str, Any]) -> None:
        """A new live model is in place: remember who asked (for a rollback), tell the
        agent."""
        with self._failed_lock:
            self._trials[stream] = (sha256, {k: said[k] for k in ("action", "id") if k in said})
        self._on_applied(stream, sha256)

    def _refused(self, said: dict[str, Any], reason: str, reply: Optional[Reply]) -> None:
        if reason == CLOSED:  # anyone on the broker can send these: a rate-limited line
            self._log.warning("closed", "model update refused: %s", reason)
        else:
            logger.error("model update refused: %s", reason)
        self._state({**said, "status": "rejected", "reason": reason}, reply)

    def apply(self, request: dict[str, Any]) -> str:
        """Fetch, verify, check and install one bundle; returns its sha256."""
        u = self.cfg.updates
        if u.mode == "closed":
            raise UpdateError(CLOSED)
        sc = _stream(self.cfg, request["stream"])
        want = request["sha256"]
        signed = u.public_key is not None
        if signed and not isinstance(request.get("signature"), str):
            raise UpdateError("'signature' (base64 Ed25519) is required: updates.public_key is set")
        with self._failed_lock:
            failed = want in self._failed
        if failed:
            raise UpdateError(_FAILED.format(sha=want[:12]))
        data = request.get("data")
        if data is None:
            try:
                # urllib and http.client load only when an update comes (start-up time).
                from sensorcast.agent.control.download import DownloadError, download

                data = download(request["url"], u.max_bytes, u.timeout_s, allow_http=signed)
            except DownloadError as exc:
                raise UpdateError(str(exc)) from exc
        if len(data) > u.max_bytes:
            raise UpdateError(f"bundle is {len(data)} bytes, more than updates.max_bytes")
        # Only the verdict: a digest of bytes that did not match (a local file, a guessed
        # secret) must not be published.
        if hashlib.sha256(data).hexdigest() != want:
            raise UpdateError(
                "digest mismatch: the bundle is not the one the request's sha256 names"
            )
        if u.public_key is not None:
            _verify_signature(u.public_key, data, request.get("signature"))
        shadow = request.get("shadow") is True
        self._install(sc, data, shadow)
        logger.info(
            "model update: %s@%s installed for stream %s%s",
            sc.model.stem, want[:12], sc.name, " as its shadow" if shadow else "",
        )  # fmt: skip
        return str(want)

    def _install(self, sc: StreamConfig, data: bytes, shadow: bool = False) -> None:
        target = shadow_path(sc) if shadow else sc.model
        tmp = target.with_name(f".{target.name}.update")
        try:
            write_synced(tmp, data)
            bundle = self._check(replace(sc, model=tmp))
            if sc.features is None:
                current = read_bundle(sc.model, self.cfg.models.max_bytes).manifest.features
                if bundle.manifest.features != current:
                    raise UpdateError(
                        f"bundle wants features {', '.join(bundle.manifest.features)}, the "
                        f"stream runs {', '.join(current)}"
                    )
            if not self.cfg.updates.allow_downgrade:  # a shadow is on its way to live
                refuse_older(bundle, sc.model, self.cfg.models.max_bytes)
            if not shadow:
                keep_previous(target)
            os.replace(tmp, target)
        except ModelError as exc:
            text = str(exc).replace(f"model {tmp}", "the bundle").replace(str(tmp), "the bundle")
            raise UpdateError(text) from exc
        except OSError as exc:
            raise UpdateError(
                f"cannot write {target}: {exc.strerror or exc} (keep models where the agent "
                "may write, e.g. under its state directory, to update them over MQTT)"
            ) from exc
        finally:
            if tmp.exists():
                tmp.unlink()

    def _state(self, body: dict[str, Any], reply: Optional[Reply] = None) -> None:
        """Publish ``body`` on the state topic, and to the request's response topic."""
        data = json.dumps({"device": self.cfg.device.id, "time": time.time(), **body}).encode()
        self._publish(self.state_topic, data)
        if reply is not None and self._reply is not None:
            self._reply(reply.topic, data, reply.correlation)


def _stream(cfg: Config, name: str) -> StreamConfig:
    for sc in cfg.streams:
        if sc.name == name:
            return replace(sc)
    raise UpdateError(
        f"no stream {name!r} here (streams: {', '.join(s.name for s in cfg.streams)})"
    )


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


def _scrub(text: str, url: Optional[str]) -> str:
    """``text`` without the URL's password (the download module, loaded on first use)."""
    from sensorcast.agent.control.download import scrub

    return scrub(text, url)
