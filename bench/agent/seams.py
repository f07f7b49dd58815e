"""Drives this tree's agent through its public seams only (typed: mypy checks them).

The seams: ``Service.start``/``close``/``turn``, ``Service.pipeline`` (``Pipeline.ingest``,
``tick``, ``forecast_due``), ``Service.inbox``,
the public ``Service.outbox``, ``OutboxSender.outbox`` and ``ForecastPublisher.outbox``,
``Stream.sources`` and ``Service.counters``. A baseline from before them goes through
:mod:`bench.agent.legacy` instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

from sensorcast.agent.config import load_config
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import Bundle, read_bundle
from sensorcast.agent.forecast.runtime import Runtime, load_runtime
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.publish.payload import ForecastPublisher
from sensorcast.agent.service import Service
from sensorcast.agent.sources.base import Reading
from sensorcast.agent.sources.mqtt import MqttJsonSource
from sensorcast.agent.window import Window

__all__ = ["SeamsDriver"]


class SeamsDriver:
    """:class:`bench.agent.drive.Driver` for a tree whose package is ``sensorcast.agent``."""

    package = "sensorcast.agent"

    def load_runtime(self, name: Optional[str]) -> Runtime:
        return load_runtime(name)

    def read_bundle(self, path: Path) -> Bundle:
        return read_bundle(path)

    def forecaster(self, bundle: Bundle, runtime: Optional[Runtime] = None) -> Forecaster:
        return Forecaster(bundle, runtime)

    def window(self, features: int, size: int, period_s: float) -> Window:
        return Window(features, size, period_s, close_delay_s=1e9, max_future_s=1e12)

    def outbox(self, path: Optional[Path]) -> Outbox:
        return Outbox(path)

    def publisher(self, box: Any, targets: tuple[str, ...], period_s: float) -> ForecastPublisher:
        return ForecastPublisher(box, "pi-1", "room", "sensorcast", 1, targets, period_s)

    def parser(self, features: tuple[str, ...], sink: Callable[[Any], None]) -> MqttJsonSource:
        return MqttJsonSource(0, "s", features, "t", sink)

    def reading(self, feature: int, ts: float, value: float) -> Reading:
        return Reading(0, feature, ts, value)

    def service(self, cfg: Path, runtime: Optional[Runtime]) -> Service:
        service = Service(load_config(cfg, env={}), runtime)
        service.start()  # loads, opens and connects; Service() alone does no I/O
        return service

    def stream_input(self, service: Service, index: int) -> Callable[[bytes, float], None]:
        source = service.streams[index].sources[0]
        assert isinstance(source, MqttJsonSource)
        return source.handle

    def use_outbox(self, service: Service, box: Any, publishers_only: bool) -> None:
        # The service's own outbox stays open (the heartbeat reads its depth); close()
        # closes it.
        if not publishers_only:
            service.outbox = service.sender.outbox = box
        for stream in service.streams:
            assert stream.publisher is not None
            stream.publisher.outbox = box

    def turn(self, service: Service) -> None:
        service.turn(0.0)

    def compute(self, service: Service) -> None:
        """:meth:`turn` without MQTT and the outbox: the readings queued by the sources go
        through the pipeline (windows, forecasts, payloads), no poll, send or heartbeat."""
        now = time.time()
        service.inbox.drain(service.pipeline.ingest, now, limit=1000)
        service.pipeline.tick(now)
        service.pipeline.forecast_due()

    def ingest(self, service: Service, batch: list[Any], now: float) -> None:
        service.pipeline.ingest(batch, now)

    def forecasts(self, service: Service, stream: str) -> int:
        return int(service.counters()[stream]["forecasts"])

    def close(self, service: Service, flush_s: Optional[float]) -> int:
        left = 0
        if flush_s is not None:
            service.sender.flush(flush_s)
            left = service.outbox.depth
        box = service.outbox
        service.close()
        box.close()  # the swapped-in one, if any (closing twice is harmless)
        return left
