"""The baseline side ONLY: drives an agent tree from before the package rename and its seams.

Trees up to c4dd723 (main before issue 14's redesign) install ``agent/`` as the top-level
package ``agent``, have no ``pipeline`` and no public outbox on ``ForecastPublisher``. To
measure them as the "before" of ``--baseline`` this module uses their private methods
(``Service._ingest``, ``ForecastPublisher._outbox``), and nothing else does: the benchmarks
of this tree go through :mod:`bench.agent.seams`. Everything is imported by name at run
time (the tree is not what mypy sees), so it is all ``Any``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = ["LegacyDriver"]


def _get(module: str, name: str) -> Any:
    return getattr(importlib.import_module(f"agent.{module}"), name)


class LegacyDriver:
    """:class:`bench.agent.drive.Driver` for a tree whose package is ``agent``."""

    package = "agent"

    def load_runtime(self, name: Optional[str]) -> Any:
        return _get("runtime", "load_runtime")(name)

    def read_bundle(self, path: Path) -> Any:
        return _get("manifest", "read_bundle")(path)

    def forecaster(self, bundle: Any, runtime: Any = None) -> Any:
        return _get("forecast", "Forecaster")(bundle, runtime)

    def window(self, features: int, size: int, period_s: float) -> Any:
        window = _get("window", "Window")
        return window(features, size, period_s, close_delay_s=1e9, max_future_s=1e12)

    def outbox(self, path: Optional[Path]) -> Any:
        return _get("outbox", "Outbox")(path)

    def publisher(self, box: Any, targets: tuple[str, ...], period_s: float) -> Any:
        publisher = _get("publish", "ForecastPublisher")
        return publisher(box, "pi-1", "room", "sensorcast", 1, targets, period_s)

    def parser(self, features: tuple[str, ...], sink: Callable[[Any], None]) -> Any:
        return _get("sources.mqtt", "MqttJsonSource")(0, "s", features, "t", sink)

    def reading(self, feature: int, ts: float, value: float) -> Any:
        return _get("sources", "Reading")(0, feature, ts, value)

    def service(self, cfg: Path, runtime: Any) -> Any:
        config = _get("config", "load_config")(cfg, env={})
        service = _get("service", "Service")(config, runtime)  # loads and opens
        service.link.connect()
        return service

    def stream_input(self, service: Any, index: int) -> Callable[[bytes, float], None]:
        handle: Callable[[bytes, float], None] = service.streams[index].sources[0].handle
        return handle

    def use_outbox(self, service: Any, box: Any, publishers_only: bool) -> None:
        if not publishers_only:
            service.outbox.close()
            service.outbox = service.sender.outbox = box
        for stream in service.streams:
            stream.publisher._outbox = box  # private before issue 14

    def turn(self, service: Any) -> None:
        service.turn(0.0)

    def ingest(self, service: Any, batch: list[Any], now: float) -> None:
        service._ingest(batch, now)  # private before issue 14

    def forecasts(self, service: Any, stream: str) -> int:
        return int(service.counters()[stream]["forecasts"])

    def close(self, service: Any, flush_s: Optional[float]) -> int:
        left = 0
        if flush_s is not None:
            service.sender.flush(flush_s)
            left = int(service.outbox.depth)
        service.link.close()
        service.outbox.close()
        return left
