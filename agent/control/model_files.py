"""Model files changed under a running agent: synced writes, ``<model>.previous`` kept and put
back, atomic replacement, and the no-downgrade rule (manifest ``created``). Shared by model
updates (:mod:`.updates`), their actions (:mod:`.actions`) and promotion (:mod:`.promote`).
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from sensorcast.agent.errors import ModelError, UpdateError
from sensorcast.agent.forecast.manifest import Bundle, read_bundle

__all__ = [
    "created", "keep_previous", "refuse_older", "replace_file", "restore_previous", "write_synced",
]  # fmt: skip


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to disk (before a rename publishes it)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def keep_previous(model: Path) -> None:
    """Copy ``model`` (if there) to ``<model>.previous``, streamed, before it is replaced."""
    if model.exists():
        shutil.copyfile(model, model.with_name(model.name + ".previous"))


def replace_file(source: Path, target: Path) -> None:
    """Replace ``target`` with a copy of ``source`` atomically: a temporary file beside it,
    synced to disk, renamed over it. Raises :class:`OSError`."""
    tmp = target.with_name(f".{target.name}.replace")
    try:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def restore_previous(model: Path) -> bool:
    """Put ``<model>.previous`` back in place of ``model`` (atomically, keeping the copy).

    Returns False if there is no ``.previous``; raises :class:`OSError` if it cannot be
    written.
    """
    previous = model.with_name(model.name + ".previous")
    if not previous.is_file():
        return False
    replace_file(previous, model)
    return True


def created(text: str) -> Optional[datetime]:
    """A manifest's ``created`` (ISO 8601; naive means UTC), or None if empty or unreadable."""
    if text.endswith(("Z", "z")):  # the converter's form; fromisoformat takes Z only from 3.11
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def refuse_older(bundle: Bundle, target: Path, max_bytes: int) -> None:
    """No rollback by replay: raise :class:`UpdateError` for a bundle made before the one in
    ``target``.

    ``created`` is inside the bundle (and so inside what a signature covers). A running
    model without a readable ``created`` cannot be compared: anything goes. A new bundle
    without one, over a model that has one, is refused: it could be of any age.
    """
    try:
        running = created(read_bundle(target, max_bytes).manifest.created)
    except ModelError:
        return  # no readable model runs from that file: nothing to compare with
    if running is None:
        return
    new = created(bundle.manifest.created)
    fix = "set updates.allow_downgrade = true in this device's config to allow it"
    if new is None:
        raise UpdateError(
            f"bundle has no readable created time (manifest created "
            f"{bundle.manifest.created!r}) and may be older than the running model "
            f"(created {running.isoformat()}); {fix}"
        )
    if new < running:
        raise UpdateError(
            f"bundle created {new.isoformat()} is older than the running model (created "
            f"{running.isoformat()}): a downgrade; {fix}"
        )
