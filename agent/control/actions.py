"""What a model update request on ``model/set`` asks, and the two requests that bring no
bundle: promote a stream's shadow to live, or drop it.

Every request is a JSON object with ``"stream"``, ``"sha256"``, an optional ``"action"``
(:data:`ACTIONS`; ``"install"`` when absent: ``"data"`` or ``"url"``, and ``"signature"``,
``"shadow"``) and an optional ``"id"`` (a string of at most :data:`MAX_ID` characters) that
the state message echoes, with the action, so a fleet controller can tell which of its
requests an outcome answers.

``"promote"`` and ``"drop_shadow"`` name the shadow by its sha256, so an action decided on
what a controller saw earlier never promotes or removes another bundle that arrived since;
both are idempotent (the live model already is that bundle, no shadow there: applied).
They need no signature: they bring no bytes, and the shadow was verified when it was
installed. Promotion is the code ``sensorcast promote`` runs
(:func:`~sensorcast.agent.control.promote.promote`: ``.previous`` kept, the
``<model>.shadow`` consumed), refusing a downgrade as installs do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from sensorcast.agent.config import StreamConfig
from sensorcast.agent.control.model_files import refuse_older
from sensorcast.agent.control.promote import FILES, promote
from sensorcast.agent.control.shadow_files import shadow_path
from sensorcast.agent.errors import ModelError, UpdateError
from sensorcast.agent.forecast.manifest import Bundle

__all__ = ["ACTIONS", "MAX_ID", "drop_shadow", "echo", "head", "parse", "promote_shadow"]

logger = logging.getLogger(__name__)

ACTIONS = ("install", "promote", "drop_shadow")  #: What a request may ask.
MAX_ID = 256  #: The longest request id echoed, characters (a rollout's ids reach about 180).
CHUNK = 1 << 20  #: Read size when hashing a model file, bytes.


def parse(payload: bytes) -> dict[str, Any]:
    """The request in ``payload``, checked: ``action`` filled in, ``sha256`` in lower case,
    an install's ``data`` decoded. Raises :class:`UpdateError` in one line."""
    try:
        request = json.loads(payload)
    except ValueError as exc:
        raise UpdateError(f"not JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise UpdateError("want a JSON object with stream, sha256, and url or data")
    for key in ("stream", "sha256"):
        if not isinstance(request.get(key), str):
            raise UpdateError(f"{key!r} missing or not a string")
    if request.setdefault("action", "install") not in ACTIONS:
        raise UpdateError(f"'action' must be one of {', '.join(ACTIONS)} (install if absent)")
    if "id" in request and not _valid_id(request["id"]):
        raise UpdateError(f"'id' must be a string of at most {MAX_ID} characters")
    request["sha256"] = request["sha256"].lower()
    if request["action"] == "install":
        _install_fields(request)
    return request


def _install_fields(request: dict[str, Any]) -> None:
    if ("url" in request) == ("data" in request):
        raise UpdateError("give exactly one of 'url' and 'data' (base64)")
    if "data" in request:
        try:
            request["data"] = base64.b64decode(request["data"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise UpdateError(f"'data' is not base64: {exc}") from exc
    elif not isinstance(request["url"], str):
        raise UpdateError("'url' must be a string")
    if not isinstance(request.get("shadow", False), bool):
        raise UpdateError("'shadow' must be true (install as the stream's shadow) or false")


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ID


def echo(payload: bytes) -> dict[str, Any]:
    """What a state message repeats of a request, even one refused unread: ``stream`` (None
    if it names none), ``action`` and ``id`` where valid, an action's ``sha256``."""
    try:
        request = json.loads(payload)
    except ValueError:
        request = None
    return head(request)


def head(request: Any) -> dict[str, Any]:
    """:func:`echo` of a request already read from JSON (``parse`` fills in its action)."""
    if not isinstance(request, dict):
        return {"stream": None}
    stream, action = request.get("stream"), request.get("action", "install")
    body: dict[str, Any] = {"stream": stream if isinstance(stream, str) else None}
    if isinstance(action, str) and action in ACTIONS:
        body["action"] = action
        sha = request.get("sha256")
        if action != "install" and isinstance(sha, str):  # installs never echoed one
            body["sha256"] = sha.lower()
    if _valid_id(request.get("id")):
        body["id"] = request["id"]
    return body


def promote_shadow(
    sc: StreamConfig,
    want: str,
    check: Callable[[StreamConfig], Bundle],
    max_bytes: int,
    allow_downgrade: bool = False,
    note: str = "model/set request",
) -> tuple[dict[str, Any], bool]:
    """Promote the stream's shadow if it is the bundle ``want`` (sha256). Returns the state
    message's fields and whether a new live model is in place (the loop swaps it in); the
    live model already being ``want`` is applied, changing nothing. Raises
    :class:`UpdateError` in one line: no shadow, another one, a downgrade (unless
    ``allow_downgrade``), or what :func:`promote` refuses."""
    with FILES:  # the live file hashed is the one promoted over
        live = _digest(sc.model, max_bytes)
        if live == want:
            logger.info(
                "model update: stream %s: promote %s: already live (%s)",
                sc.name, _label(sc, want), note,
            )  # fmt: skip
            return {"model": _label(sc, want), "reason": "already live"}, False

        def guard(bundle: Bundle) -> None:
            if bundle.sha256 != want:
                raise UpdateError(f"stream {sc.name}: {_other(sc, bundle.sha256, want)}")
            if not allow_downgrade:
                try:
                    refuse_older(bundle, sc.model, max_bytes)
                except UpdateError as exc:
                    raise UpdateError(f"stream {sc.name}: shadow {exc}") from exc

        try:
            done = promote(sc, check, max_bytes, guard, note)
        except ModelError as exc:
            raise UpdateError(str(exc)) from exc
    return {"model": done.label, "previous": done.previous}, True


def drop_shadow(
    sc: StreamConfig, want: str, max_bytes: int, note: str = "model/set request"
) -> dict[str, Any]:
    """Remove the stream's ``<model>.shadow`` if it is the bundle ``want`` (sha256); none
    there is applied too. Returns the state message's fields. Raises :class:`UpdateError`
    for another bundle, or a configured ``shadow_model`` (the device's config names it:
    not the device's to delete)."""
    path = shadow_path(sc)
    with FILES:
        have = _digest(path, max_bytes)
        if have is None:
            logger.info("model update: stream %s: no shadow to drop (%s)", sc.name, note)
            return {"reason": "no shadow"}
        if sc.shadow_model is not None:
            raise UpdateError(
                f"stream {sc.name}: its shadow is shadow_model {path}, set in the device's "
                "config: not removed over MQTT; remove shadow_model from the config instead"
            )
        if have != want:
            raise UpdateError(f"stream {sc.name}: {_other(sc, have, want)}")
        try:
            path.unlink()
        except OSError as exc:
            raise UpdateError(f"cannot remove {path}: {exc.strerror or exc}") from exc
    logger.info("model update: stream %s: shadow %s dropped (%s)", sc.name, _label(sc, want), note)
    return {}


def _label(sc: StreamConfig, sha256: str) -> str:
    return f"{sc.model.stem}@{sha256[:12]}"


def _other(sc: StreamConfig, have: str, want: str) -> str:
    """Why an action's sha256 does not name the shadow there."""
    here = f"the shadow here is {_label(sc, have)} (sha256 {have})"
    return f"{here}, not {want[:12]}: nothing changed"


def _digest(path: Path, max_bytes: int) -> Optional[str]:
    """The sha256 of the file ``path`` (a model's, up to ``max_bytes``), None if there is
    none. Raises :class:`UpdateError` if it cannot be read or is not a regular file."""
    if not path.exists():
        return None
    if not path.is_file():  # a FIFO would block the reader
        raise UpdateError(f"{path} is not a regular file")
    h, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise UpdateError(f"{path} is larger than models.max_bytes")
                h.update(chunk)
    except OSError as exc:
        raise UpdateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return h.hexdigest()
