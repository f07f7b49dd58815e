"""Promotion: a stream's shadow model becomes its live model (``sensorcast promote``, and
the agent's automatic promotion, one code path).

The shadow's bytes are read once (bounded as any model), written beside the live model,
synced to disk, checked as the agent checks a model at start and against the live model
(same features, targets, window and period), then the live model is kept as
``<model>.previous`` and the new one renamed over it: atomic, as model updates do. A
running agent swaps it in at its next model file check (every 2 s, or at once on SIGHUP).

The shadow file: a ``<model>.shadow`` (the default place, where ``"shadow": true`` updates
install) is consumed; a configured ``shadow_model`` file is left alone, and then equals the
live model, which the agent does not run twice.

Promotions in one process (a remote ``"action": "promote"`` in the updater's thread, an
automatic one in the main loop) take :data:`FILES` in turn, so they never write the same
temporary file or promote from a shadow being removed.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from typing import Callable, Optional

from sensorcast.agent.config import Config, StreamConfig
from sensorcast.agent.control.model_files import keep_previous, write_synced
from sensorcast.agent.control.shadow_files import live_label, misfit, shadow_path
from sensorcast.agent.errors import ConfigError, ModelError
from sensorcast.agent.forecast.manifest import Bundle, read_bundle, read_model_file

__all__ = ["FILES", "Promoted", "find_stream", "promote"]

logger = logging.getLogger(__name__)

#: Held while a stream's live or shadow file is changed by this process (reentrant).
FILES = threading.RLock()


@dataclass(frozen=True)
class Promoted:
    """What a promotion did."""

    stream: str
    label: str  #: The new live model's label (``<model stem>@sha256-prefix``).
    sha256: str
    previous: Optional[str]  #: The old live model's label, None if it was unreadable.
    consumed: bool  #: The ``<model>.shadow`` file was removed.


def find_stream(cfg: Config, name: str) -> StreamConfig:
    """The stream ``name`` of the config; :class:`ConfigError` naming the ones there are."""
    for sc in cfg.streams:
        if sc.name == name:
            return sc
    raise ConfigError(
        f"{cfg.path}: no stream {name!r} (streams: {', '.join(s.name for s in cfg.streams)})"
    )


def promote(
    sc: StreamConfig,
    check: Callable[[StreamConfig], Bundle],
    max_bytes: int,
    guard: Optional[Callable[[Bundle], None]] = None,
    note: str = "",
) -> Promoted:
    """Make the stream's shadow its live model. ``check(stream config)`` loads a bundle as
    the agent would at start and raises :class:`ModelError` if it would not run; ``guard(the
    shadow's bundle)``, if given, runs next and may refuse it (raising anything) before a
    file changes; ``note`` ends the log line (who asked).

    Raises :class:`ModelError` in one line: no shadow, a shadow that is not a valid bundle or
    does not fit the stream, one that is already live, or a model file that cannot be written.
    """
    with FILES:
        return _promote(sc, check, max_bytes, guard, note)


def _promote(
    sc: StreamConfig,
    check: Callable[[StreamConfig], Bundle],
    max_bytes: int,
    guard: Optional[Callable[[Bundle], None]],
    note: str,
) -> Promoted:
    source = shadow_path(sc)
    if not source.exists():
        raise ModelError(
            f"stream {sc.name}: no shadow model ({source} does not exist); set shadow_model, "
            'or install one with a "shadow": true model update'
        )
    target = sc.model
    tmp = target.with_name(f".{target.name}.promote")
    try:
        data = read_model_file(source, max_bytes)
        write_synced(tmp, data)
        bundle = check(replace(sc, model=tmp))
        if guard is not None:
            guard(bundle)
        previous = _live(sc, bundle, max_bytes)
        keep_previous(target)
        os.replace(tmp, target)
        consumed = sc.shadow_model is None
        if consumed:
            source.unlink(missing_ok=True)
    except ModelError as exc:
        text = str(exc).replace(f"model {tmp}", f"shadow {source}")
        text = text.replace(str(tmp), f"shadow {source}")
        if not text.startswith(f"stream {sc.name}"):
            text = f"stream {sc.name}: {text}"
        raise ModelError(text) from exc
    except OSError as exc:
        raise ModelError(
            f"stream {sc.name}: cannot promote {source} to {target}: {exc.strerror or exc} "
            "(the model's folder must be writable)"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    label = live_label(sc, bundle)
    logger.info(
        "stream %s: shadow %s promoted to live model %s (was %s, kept as %s.previous%s)",
        sc.name, source, label, previous or "unreadable", target.name, note and f"; {note}",
    )  # fmt: skip
    return Promoted(sc.name, label, bundle.sha256, previous, consumed)


def _live(sc: StreamConfig, shadow: Bundle, max_bytes: int) -> Optional[str]:
    """The live model's label; refuses a shadow that does not fit it or already is it."""
    try:
        live = read_bundle(sc.model, max_bytes)
    except ModelError:
        return None  # nothing readable is live: the shadow may replace it
    if live.sha256 == shadow.sha256:
        raise ModelError(f"shadow {shadow_path(sc)} is already the live model ({live.label})")
    problem = misfit(live.manifest, shadow.manifest)
    if problem is not None:
        raise ModelError(f"shadow {shadow_path(sc)} does not fit the stream: {problem}")
    return live_label(sc, live)
