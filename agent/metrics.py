"""Counters and gauges of a running agent: one snapshot, two ways out.

The main loop only bumps plain integers and a fixed-bucket latency histogram (no locks, no
library on the hot path). :func:`snapshot` reads them into a dict, which the agent
publishes as JSON on ``<prefix>/<device>/metrics`` every ``metrics.interval_s``, and which a
Prometheus collector (``prometheus-client``, optional: ``pip install
'sensorcast[metrics]'``) turns into metric families when scraped.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from agent.service import Service

__all__ = ["LatencyHistogram", "serve_prometheus", "snapshot"]

logger = logging.getLogger(__name__)

#: Inference latency buckets, seconds (upper bounds; +Inf implied).
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class LatencyHistogram:
    """Cumulative-at-read histogram of forecast (model invoke) times."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(upper bound, observations <= it), ..., ("+Inf", count)]``."""
        out, total = [], 0
        for bound, n in zip((*map(str, BUCKETS), "+Inf"), list(self.counts)):
            total += n
            out.append((bound, total))
        return out


def snapshot(service: Service) -> dict[str, Any]:
    """Everything worth watching, as plain data (read from the main loop's counters)."""
    box, link = service.outbox, service.link
    streams: dict[str, Any] = {}
    for name, c in service.counters().items():
        s = next(st for st in service.streams if st.cfg.name == name)
        streams[name] = {
            **c,
            "model": s.bundle.label,
            "quantization": s.bundle.manifest.quantization,
            "last_forecast": s.last_forecast,
            "latency": {
                "count": s.latency.count,
                "sum_s": s.latency.sum,
                "buckets": s.latency.cumulative(),
            },
            "quality_ratio": s.quality.ratio() if s.quality is not None else None,
            "drift": bool(s.quality is not None and s.quality.drifting),
        }
    return {
        "device": service.cfg.device.id,
        "time": time.time(),
        "connected": link.connected,
        "reconnects": link.reconnects,
        "shed": service.shed,
        "outbox": {
            "depth": box.depth,
            "bytes": box.size_bytes,
            "high_water": box.high_water,
            "dropped": box.dropped,
            "sent": service.sender.sent,
            "refused": service.sender.refused,  # by the broker (MQTT 5), not retried
            "degraded": box.degraded,
        },
        "streams": streams,
    }


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
                if st["last_forecast"] is not None:
                    last.add_metric([name], st["last_forecast"])
                model.add_metric([name], {"model": st["model"], "quantization": st["quantization"]})
                if st["quality_ratio"] is not None:
                    ratio.add_metric([name], st["quality_ratio"])
                drift.add_metric([name], 1.0 if st["drift"] else 0.0)
                lat = st["latency"]
                latency.add_metric([name], lat["buckets"], sum_value=lat["sum_s"])
            yield from (accepted, rejected, forecasts, last, model, ratio, drift, latency)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    server = start_http_server(port, addr=address, registry=registry)
    logger.info("Prometheus metrics on http://%s:%d/metrics", address, port)
    return server
