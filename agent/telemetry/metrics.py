"""Counters and gauges of a running agent: one snapshot, two ways out.

The main loop only bumps the plain counters of :mod:`~sensorcast.agent.telemetry.stats` (no
locks, no library on the hot path). :func:`snapshot` reads them into a dict, which the agent
publishes as JSON on ``<prefix>/<device>/metrics`` every ``metrics.interval_s``, and which a
Prometheus collector (:mod:`~sensorcast.agent.telemetry.prometheus`; ``prometheus-client``,
optional: ``pip install 'sensorcast[metrics]'``) turns into metric families when scraped,
beside prometheus-client's standard process, platform and garbage-collector families.

Reading a stream's quality figures refreshes its tracker's scores, which only the main loop
may do: the snapshot a scrape gets is made by the loop
(:meth:`~sensorcast.agent.telemetry.report.Reporter.snapshot`).
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from sensorcast.agent import __version__
from sensorcast.agent.config import MetricsConfig
from sensorcast.agent.errors import ConfigError
from sensorcast.agent.publish.link import MqttLink
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.publish.sender import OutboxSender
from sensorcast.agent.telemetry.stats import StreamView

__all__ = ["serve_prometheus", "snapshot", "start_prometheus"]

logger = logging.getLogger(__name__)


def snapshot(
    device: str,
    link: MqttLink,
    shed: int,
    outbox: Outbox,
    sender: OutboxSender,
    streams: Sequence[StreamView],
    site: Optional[str] = None,
) -> dict[str, Any]:
    """Everything worth watching, as plain data (read from the main loop's counters).

    ``shed`` counts reading batches (or MQTT messages) dropped because the loop was behind;
    ``site``: ``device.site``, the site broker the device is behind (fleets).
    """
    stamps = link.stamps
    runtime = streams[0].forecaster.runtime if streams else None
    return {
        "device": device,
        "site": site,
        "time": time.time(),
        "build": {
            "version": __version__,
            "python": platform.python_version(),
            "runtime": runtime.name if runtime is not None else None,
            "runtime_version": runtime.version if runtime is not None else None,
        },
        "connected": link.connected,
        "reconnects": link.reconnects,
        "broker": link.broker,  # host:port of mqtt.url's broker it is on (or tries next)
        "failovers": link.failovers,  # connections to another broker of the list than before
        "shed": shed,
        "outbox": {
            "depth": outbox.depth,
            "bytes": outbox.size_bytes,
            "high_water": outbox.high_water,
            "dropped": outbox.dropped,
            "sent": sender.sent,
            "refused": sender.refused,  # by the broker (MQTT 5), not retried
            "late": stamps.late if stamps is not None else 0,  # sent past the staleness limit
            "degraded": outbox.degraded,
        },
        "streams": {s.name: _stream(s) for s in streams},
    }


def _stream(s: StreamView) -> dict[str, Any]:
    """One stream's part of the snapshot."""
    quality, shadow = s.quality, s.shadow
    maes = shadow.maes() if shadow is not None else None
    return {
        **s.counters(),
        # each source message (an MQTT message, a line, a read) may carry several readings:
        # "accepted" counts values, this counts messages
        "input_messages": sum(source.messages for source in s.sources),
        "model": s.label,
        "quantization": s.manifest.quantization,
        "last_forecast": s.last_forecast,
        "latency": {
            "count": s.latency.count,
            "sum_s": s.latency.sum,
            "buckets": s.latency.cumulative(),
        },
        "quality_ratio": quality.ratio() if quality is not None else None,
        "drift": bool(quality is not None and quality.drifting),
        "level": quality.level if quality is not None else None,
        "coverage": quality.coverage_mean() if quality is not None else None,
        "skill": quality.skill() if quality is not None else {},
        "anomaly": bool(s.anomaly is not None and s.anomaly.active),
        "fallback": s.fallback_active,
        "shadow": None
        if shadow is None
        else {
            "model": shadow.label,
            # shadow MAE / live MAE on the same actuals: below 1, the shadow does better
            "mae_ratio": maes[0] / maes[1] if maes is not None and maes[1] > 0 else None,
        },
    }


def start_prometheus(
    cfg: MetricsConfig, get: Callable[[], dict[str, Any]]
) -> Optional[Callable[[], None]]:
    """Serve ``get()`` on ``metrics.prometheus_port``, if one is set; returns what stops it.

    A busy port or a missing ``prometheus-client`` is a :class:`ConfigError` (one line).
    """
    if not cfg.prometheus_port:
        return None
    try:
        server = serve_prometheus(get, cfg.prometheus_address, cfg.prometheus_port)
    except OSError as exc:
        raise ConfigError(
            f"metrics.prometheus_port {cfg.prometheus_port} on {cfg.prometheus_address}: "
            f"{exc.strerror or exc}; pick a free port"
        ) from exc
    except ImportError as exc:
        raise ConfigError(str(exc)) from exc
    stop: Callable[[], None] = server[0].shutdown  # (server, thread)
    return stop


def serve_prometheus(get: Callable[[], dict[str, Any]], address: str, port: int) -> Any:
    """Start prometheus-client's HTTP server with a collector over ``get()`` (and the
    standard process, platform and garbage-collector metrics); returns it."""
    try:
        from prometheus_client import (
            GC_COLLECTOR,
            PLATFORM_COLLECTOR,
            PROCESS_COLLECTOR,
            CollectorRegistry,
            start_http_server,
        )
        from sensorcast.agent.telemetry.prometheus import SnapshotCollector
    except ImportError as exc:
        raise ImportError(
            "metrics.prometheus_port needs prometheus-client: pip install 'sensorcast[metrics]'"
        ) from exc
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(get))
    for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(standard)  # they only read the process; one instance serves all
    server = start_http_server(port, addr=address, registry=registry)
    logger.info("Prometheus metrics on http://%s:%d/metrics", address, port)
    return server
