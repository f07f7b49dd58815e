"""Hot model reload: :class:`ModelReloader` swaps a changed model file in between two
forecasts (a file edited by hand, SIGHUP, or a bundle
:class:`~sensorcast.agent.control.updates.ModelUpdater` installed); a bundle that fails to
load leaves the old one running, and one an update installed goes back to
``<model>.previous`` if it fails to load or fails in use.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path
from typing import Callable, Optional

from sensorcast.agent.config import Config
from sensorcast.agent.control.updates import ModelUpdater, restore_previous
from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import Bundle
from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.publish.link import MqttLink
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.streams import Predict, Stream, build_window, equip, load_model

__all__ = ["ModelReloader"]

logger = logging.getLogger(__name__)


class ModelReloader:
    """Swaps new bundles in between two forecasts, and rolls back updates that fail.

    Main loop only, except :meth:`installed` (the updater's thread). ``swapped()`` is
    called after a bundle was swapped in (its horizon or targets may have changed);
    ``request_reload()`` asks the loop to call :meth:`reload` soon (any thread).
    """

    def __init__(
        self,
        cfg: Config,
        streams: list[Stream],
        outbox: Outbox,
        swapped: Callable[[], None],
        request_reload: Callable[[], None],
    ) -> None:
        self.cfg = cfg
        self.streams = streams
        self._outbox = outbox
        self._swapped = swapped
        self._request_reload = request_reload
        self.updater: Optional[ModelUpdater] = None  #: Set by :meth:`open_updates`.
        #: (stream, sha256) of bundles the updater thread installed, for the loop to try.
        self._updated: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._log = RateLimitedLog(logger)
        for s in streams:
            stat = s.cfg.model.stat()
            s.model_key = (stat.st_mtime_ns, stat.st_size)

    def open_updates(self, link: MqttLink) -> ModelUpdater:
        """Start the model updater's thread; it takes requests from ``link`` and publishes
        its state there. Close it when done."""
        cfg, runtime = self.cfg, self.streams[0].forecaster.runtime
        qos, most = cfg.mqtt.qos, cfg.models.max_bytes
        self.updater = updater = ModelUpdater(
            cfg,
            lambda topic, body: link.publish_later(topic, body, qos, retain=True),
            self.installed,
            check=lambda sc: load_model(sc, runtime, most)[0],  # as at start: all or nothing
        )
        for topic in updater.topics:
            link.subscribe(topic, updater.handle, qos=1, gated=False)
        if cfg.updates.mode == "closed":
            logger.info(
                "model updates are closed: requests on %s are refused; set "
                "updates.public_key (signed bundles) or updates.allow_unsigned = true",
                updater.topics[0],
            )
        return updater

    def installed(self, stream: str, sha256: str) -> None:
        """Updater thread: a bundle is in place; the loop swaps it in, on trial."""
        self._updated.put((stream, sha256))
        self._request_reload()

    def reload(self, only_changed: bool) -> None:
        """Swap in every stream's model file (only those whose file changed, if
        ``only_changed``); a bad one leaves the old running, and one an update just
        installed goes back to ``.previous``."""
        updated: dict[Path, str] = {}  # model file -> sha256 an update just put there
        while not self._updated.empty():
            name, sha = self._updated.get()
            updated.update({s.cfg.model: sha for s in self.streams if s.cfg.name == name})
        for stream in self.streams:
            self._reload(stream, updated, only_changed)
        for stream in self.streams:  # also when the periodic file check swapped it in first
            if updated.get(stream.cfg.model) == stream.bundle.sha256:
                stream.trial = True

    def _reload(self, stream: Stream, updated: dict[Path, str], only_changed: bool) -> None:
        try:
            stat = stream.cfg.model.stat()
        except OSError:
            return  # a file being replaced; the next check sees the new one
        key = (stat.st_mtime_ns, stat.st_size)
        if only_changed and key == stream.model_key:
            return
        stream.model_key = key
        try:
            bundle, forecaster, predict = load_model(
                stream.cfg, stream.forecaster.runtime, self.cfg.models.max_bytes
            )
        except Exception as exc:  # a ModelError, or worse from a hostile bundle: not fatal
            why = str(exc)  # a ModelError names the stream; anything else is worded here
            if not isinstance(exc, ModelError):
                why = f"stream {stream.name}: model {stream.cfg.model}: {type(exc).__name__}: {exc}"
            logger.error("%s; keeping %s", why, stream.bundle.label)
            if stream.cfg.model in updated:
                self._roll_back(stream, updated.pop(stream.cfg.model), f"load failed: {why}")
            return
        if bundle.sha256 != stream.bundle.sha256:
            self._swap(stream, bundle, forecaster, predict)

    def _swap(
        self, stream: Stream, bundle: Bundle, forecaster: Forecaster, predict: Predict
    ) -> None:
        name, old, new = stream.name, stream.bundle.manifest, bundle.manifest
        if new.features != old.features:
            logger.error(
                "stream %s: new model %s wants features %s, not %s; keeping %s "
                "(restart the agent to change features)",
                name,
                bundle.label,
                ", ".join(new.features),
                ", ".join(old.features),
                stream.bundle.label,
            )
            return
        if (new.window, new.period_s, new.computed) != (old.window, old.period_s, old.computed):
            stream.window = build_window(stream.cfg, bundle)
            logger.warning("stream %s: new model's window differs: window emptied", name)
        stream.bundle, stream.forecaster, stream.predict = bundle, forecaster, predict
        equip(stream, self.cfg, self._outbox)
        logger.info("stream %s: model reloaded: now %s", name, bundle.label)
        self._swapped()

    def failed(self, streams: list[Stream], exc: Exception, doing: str) -> None:
        """A model (or its window) raised in use: counted and logged, rate-limited, never
        fatal; one on trial after an update is rolled back."""
        reason = f"{doing} failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        for stream in streams:
            stream.errors += 1
            stream.due = False  # not again each turn: the next period tries again
            self._log.warning(
                f"{stream.name}:error", "stream %s: model %s: %s",
                stream.name, stream.bundle.label, reason,
            )  # fmt: skip
        for stream in streams:
            if stream.trial:
                self._roll_back(stream, stream.bundle.sha256, reason)

    def _roll_back(self, stream: Stream, sha256: str, reason: str) -> None:
        """An update's bundle failed: put ``<model>.previous`` back, reload, report."""
        model, name = stream.cfg.model, stream.name
        for s in self.streams:
            if s.cfg.model == model:
                s.trial = False
        try:
            restored = restore_previous(model)
        except OSError as exc:
            restored = False
            reason += f"; cannot restore {model.name}.previous: {exc.strerror or exc}"
        if not restored:
            logger.error("stream %s: updated model %s failed (%s)", name, sha256[:12], reason)
            return
        logger.error(
            "stream %s: updated model %s failed (%s): rolled back to %s.previous",
            name, sha256[:12], reason, model.name,
        )  # fmt: skip
        self.reload(only_changed=False)
        if self.updater is not None:
            self.updater.rolled_back(name, sha256, reason, stream.bundle.label)
