"""Hot model reload: :class:`ModelReloader` swaps a changed model file in between two
forecasts (a file edited by hand, SIGHUP, or a bundle
:class:`~sensorcast.agent.control.updates.ModelUpdater` installed); a bundle that fails to
load leaves the old one running, and one an update installed goes back to
``<model>.previous`` if it fails to load or fails in use.

It also keeps each stream's shadow model (:mod:`~sensorcast.agent.shadow`) in step with its
file (loaded, reloaded, dropped as the file appears, changes, goes; rebuilt when the live
model changes, so both are judged on the same actuals), and promotes a shadow that beat the
live model for long enough when the stream sets ``auto_promote`` (:mod:`.control.promote`,
the code ``sensorcast promote`` runs), reported on ``model/state``. A promotion asked over
MQTT (the updater's ``"action": "promote"``) is swapped in as an update is, on trial; a
dropped shadow stops at the next file check, which the updater asks for at once.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from sensorcast.agent.config import Config, StreamConfig
from sensorcast.agent.control.model_files import restore_previous
from sensorcast.agent.control.promote import promote
from sensorcast.agent.control.shadow_files import misfit, shadow_path
from sensorcast.agent.control.updates import ModelUpdater
from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import Bundle
from sensorcast.agent.logutil import RateLimitedLog
from sensorcast.agent.publish.link import MqttLink
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.publish.topics import Topics
from sensorcast.agent.shadow import Shadow, tracker_for
from sensorcast.agent.streams import Predict, Stream, build_window, equip, load_model

__all__ = ["ModelReloader"]

logger = logging.getLogger(__name__)


class ModelReloader:
    """Swaps new bundles in between two forecasts, and rolls back updates that fail.

    Main loop only, except :meth:`installed` (the updater's thread). ``swapped()`` is
    called after a bundle was swapped in (its horizon or targets may have changed);
    ``request_reload()`` asks the loop to call :meth:`reload` soon (any thread). ``link``:
    where automatic promotions are reported (``model/state``).
    """

    def __init__(
        self,
        cfg: Config,
        streams: list[Stream],
        outbox: Outbox,
        swapped: Callable[[], None],
        request_reload: Callable[[], None],
        link: Optional[MqttLink] = None,
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
        self._link = link
        #: Per stream index: the shadow file's (mtime ns, size) when last looked at.
        self._shadow_keys: dict[int, tuple[int, int]] = {}
        #: sha256 of bundles rolled back after failing in use: never promoted by itself again.
        self._rolled_back: set[str] = set()
        for s in streams:
            stat = s.cfg.model.stat()
            s.model_key = (stat.st_mtime_ns, stat.st_size)
            self._check_shadow(s)

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
            on_shadow=lambda _stream: self._request_reload(),
            reply=lambda topic, body, correlation: link.publish_later(
                topic, body, qos, retain=False, correlation=correlation
            ),
        )
        for topic in updater.topics:
            link.subscribe(topic, updater.handle, qos=1, gated=False, with_reply=True)
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
        installed goes back to ``.previous``. Shadows are judged for automatic promotion
        first (one promoted is swapped in here, on trial), their files checked last."""
        for stream in self.streams:
            if stream.cfg.auto_promote and stream.shadow is not None:
                self._judge(stream, stream.shadow)
        updated: dict[Path, str] = {}  # model file -> sha256 an update just put there
        while not self._updated.empty():
            name, sha = self._updated.get()
            updated.update({s.cfg.model: sha for s in self.streams if s.cfg.name == name})
        for stream in self.streams:
            self._reload(stream, updated, only_changed)
        for stream in self.streams:  # also when the periodic file check swapped it in first
            if updated.get(stream.cfg.model) == stream.bundle.sha256:
                stream.trial = True
        for stream in self.streams:
            self._check_shadow(stream)

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
        self._shadow_keys.pop(stream.index, None)  # both start again on the same actuals
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
        self._rolled_back.add(sha256)
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

    def _check_shadow(self, stream: Stream) -> None:
        """Load, reload or drop the stream's shadow as its file appeared, changed or went."""
        path = shadow_path(stream.cfg)
        try:
            stat = path.stat()
        except OSError:
            if stream.shadow is not None:
                logger.info("stream %s: shadow model %s is gone", stream.name, path)
            stream.shadow = None
            self._shadow_keys.pop(stream.index, None)
            return
        key = (stat.st_mtime_ns, stat.st_size)
        if self._shadow_keys.get(stream.index) == key:
            return
        self._shadow_keys[stream.index] = key
        stream.shadow = self._load_shadow(stream, replace(stream.cfg, model=path))

    def _load_shadow(self, stream: Stream, sc: StreamConfig) -> Optional[Shadow]:
        """The shadow in ``sc.model``, read and checked as a model is, and against the live
        model; None (one line logged) if it does not fit, or is the live model."""
        try:
            bundle, _forecaster, predict = load_model(
                sc, stream.forecaster.runtime, self.cfg.models.max_bytes
            )
            problem = misfit(stream.manifest, bundle.manifest)
        except Exception as exc:  # a ModelError, or worse from a hostile bundle: not fatal
            problem = str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
        if problem is not None:
            logger.error("stream %s: shadow model %s not run: %s", stream.name, sc.model, problem)
            return None
        if bundle.sha256 == stream.bundle.sha256:
            logger.info(
                "stream %s: shadow model %s is the live model: not run", stream.name, sc.model
            )
            return None
        tracker = tracker_for(self.cfg.quality, stream.cfg, bundle.manifest)
        shadow = Shadow(
            stream.cfg,
            bundle,
            predict,
            tracker,
            lambda: stream.quality,
            self.cfg.quality.min_samples,
        )
        logger.info(
            "stream %s: shadow model %s running beside %s", stream.name, shadow.label, stream.label
        )
        return shadow

    def _judge(self, stream: Stream, shadow: Shadow) -> None:
        """Promote the shadow (as ``sensorcast promote``) once it beat the live model by
        ``promote_margin`` for ``promote_after_s`` of data time."""
        sc = stream.cfg
        if shadow.bundle.sha256 in self._rolled_back:
            return  # it failed in use once: a loop of promotions and rollbacks helps nobody
        if not shadow.judge(sc.promote_margin, sc.promote_after_s):
            return
        maes = shadow.maes()
        assert maes is not None  # judge() said so
        runtime, most = stream.forecaster.runtime, self.cfg.models.max_bytes
        try:
            done = promote(sc, lambda c: load_model(c, runtime, most)[0], most)
        except ModelError as exc:
            shadow.better_since = None  # tried again after another promote_after_s
            logger.error("stream %s: automatic promotion failed: %s", stream.name, exc)
            return
        reason = (
            f"shadow MAE {maes[0]:.4g} stayed below (1 - {sc.promote_margin:g}) x the live "
            f"model's {maes[1]:.4g} for {sc.promote_after_s:g} s"
        )
        logger.warning(
            "stream %s: shadow %s promoted automatically (%s); was %s",
            stream.name, done.label, reason, done.previous,
        )  # fmt: skip
        self._updated.put((stream.name, done.sha256))  # swapped in on trial, as an update
        self._announce(
            {"stream": stream.name, "status": "promoted", "action": "promote",
             "sha256": done.sha256, "model": done.label, "previous": done.previous,
             "reason": reason, "auto": True}
        )  # fmt: skip

    def _announce(self, body: dict[str, Any]) -> None:
        """A retained message on ``<prefix>/<device>/model/state``, as updates report."""
        if self._link is None:
            return
        cfg = self.cfg
        topic = Topics(cfg.mqtt.topic_prefix, cfg.device.id).model_state
        data = json.dumps({"device": cfg.device.id, "time": time.time(), **body}).encode()
        self._link.publish_later(topic, data, cfg.mqtt.qos, retain=True)
