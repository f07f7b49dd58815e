"""Counters and gauges of a running agent: one snapshot, two ways out.

The main loop only bumps the plain counters of :mod:`~sensorcast.agent.telemetry.stats` (no
locks, no library on the hot path). :func:`snapshot` reads them into a dict, which the agent
publishes as JSON on ``<prefix>/<device>/metrics`` every ``metrics.interval_s``, and which a
Prometheus collector (``prometheus-client``, optional: ``pip install
'sensorcast[metrics]'``) turns into metric families when scraped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Optional

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
) -> dict[str, Any]:
    """Everything worth watching, as plain data (read from the main loop's counters).

    ``shed`` counts reading batches (or MQTT messages) dropped because the loop was behind.
    """
    out: dict[str, Any] = {}
    for s in streams:
        quality = s.quality
        out[s.name] = {
            **s.counters(),
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
        }
    return {
        "device": device,
        "time": time.time(),
        "connected": link.connected,
        "reconnects": link.reconnects,
        "shed": shed,
        "outbox": {
            "depth": outbox.depth,
            "bytes": outbox.size_bytes,
            "high_water": outbox.high_water,
            "dropped": outbox.dropped,
            "sent": sender.sent,
            "refused": sender.refused,  # by the broker (MQTT 5), not retried
            "degraded": outbox.degraded,
        },
        "streams": out,
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
    """Start prometheus-client's HTTP server with a collector over ``get()``; returns it."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )
    except ImportError as exc:
        raise ImportError(
            "metrics.prometheus_port needs prometheus-client: pip install 'sensorcast[metrics]'"
        ) from exc

    class Collector:
        def collect(self) -> Iterator[Any]:
            data = get()
            up = GaugeMetricFamily("sensorcast_connected", "1 while connected to the broker")
            up.add_metric([], 1.0 if data["connected"] else 0.0)
            yield up
            yield CounterMetricFamily(
                "sensorcast_reconnects", "Reconnects to the broker", value=data["reconnects"]
            )
            yield CounterMetricFamily(
                "sensorcast_shed", "Reading batches dropped under load", value=data["shed"]
            )
            box = data["outbox"]
            depth = GaugeMetricFamily("sensorcast_outbox_depth", "Forecasts waiting for an ack")
            depth.add_metric([], box["depth"])
            yield depth
            high = GaugeMetricFamily("sensorcast_outbox_high_water", "Most waiting at once")
            high.add_metric([], box["high_water"])
            yield high
            yield CounterMetricFamily(
                "sensorcast_outbox_dropped",
                "Dropped when the outbox was full",
                value=box["dropped"],
            )
            yield CounterMetricFamily(
                "sensorcast_published", "Forecasts handed to the broker", value=box["sent"]
            )
            yield CounterMetricFamily(
                "sensorcast_refused", "Forecasts the broker refused", value=box["refused"]
            )
            degraded = GaugeMetricFamily("sensorcast_outbox_degraded", "1: memory only")
            degraded.add_metric([], 1.0 if box["degraded"] else 0.0)
            yield degraded

            s = ["stream"]
            accepted = CounterMetricFamily("sensorcast_readings_accepted", "Readings", labels=s)
            rejected = CounterMetricFamily(
                "sensorcast_readings_rejected", "Readings rejected", labels=["stream", "reason"]
            )
            forecasts = CounterMetricFamily("sensorcast_forecasts", "Forecasts made", labels=s)
            beyond = CounterMetricFamily(
                "sensorcast_forecasts_out_of_range",
                "Forecasts made from a window outside the model's verified range",
                labels=s,
            )
            last = GaugeMetricFamily(
                "sensorcast_last_forecast_timestamp_seconds", "Window end of the latest", labels=s
            )
            model = InfoMetricFamily(
                "sensorcast_model", "The bundle a stream runs", labels=["stream"]
            )
            ratio = GaugeMetricFamily(
                "sensorcast_forecast_error_ratio", "Rolling error / promised error", labels=s
            )
            drift = GaugeMetricFamily("sensorcast_drift", "1 while drifting", labels=s)
            latency = HistogramMetricFamily(
                "sensorcast_inference_seconds", "Time per forecast (model invoke)", labels=s
            )
            for name, st in data["streams"].items():
                accepted.add_metric([name], st["accepted"])
                for reason, n in st["rejected"].items():
                    rejected.add_metric([name, reason], n)
                forecasts.add_metric([name], st["forecasts"])
                beyond.add_metric([name], st["forecasts_out_of_range"])
                if st["last_forecast"] is not None:
                    last.add_metric([name], st["last_forecast"])
                model.add_metric([name], {"model": st["model"], "quantization": st["quantization"]})
                if st["quality_ratio"] is not None:
                    ratio.add_metric([name], st["quality_ratio"])
                drift.add_metric([name], 1.0 if st["drift"] else 0.0)
                lat = st["latency"]
                latency.add_metric([name], lat["buckets"], sum_value=lat["sum_s"])
            yield from (accepted, rejected, forecasts, beyond, last, model, ratio, drift, latency)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    server = start_http_server(port, addr=address, registry=registry)
    logger.info("Prometheus metrics on http://%s:%d/metrics", address, port)
    return server
