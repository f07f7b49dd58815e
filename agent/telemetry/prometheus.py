"""The metrics snapshot (:func:`~sensorcast.agent.telemetry.metrics.snapshot`) as Prometheus
metric families, made at each scrape (imported only with ``metrics.prometheus_port``: it
needs ``prometheus-client``).

Names follow Prometheus' conventions (``promtool check metrics`` passes): counters end in
``_total``, units are in the name (``_seconds``, ``_bytes``, ``_ratio``), one ``stream``
label per stream and no label whose values grow without bound. Readings are counted twice,
under distinct names: ``sensorcast_input_messages_total`` counts what the sources parsed (an
MQTT message, a line, a read), ``sensorcast_readings_accepted_total`` each value a window
took (one message may carry several features).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric

__all__ = ["SnapshotCollector"]

STREAM = ["stream"]


class SnapshotCollector:
    """A prometheus-client collector over ``get()``, the agent's metrics snapshot (the main
    loop's counters, read from the HTTP server's thread)."""

    def __init__(self, get: Callable[[], dict[str, Any]]) -> None:
        self._get = get

    def collect(self) -> Iterator[Metric]:
        """Every family, from one snapshot."""
        data = self._get()
        yield from _device(data)
        yield from _outbox(data["outbox"])
        yield from _streams(data["streams"])


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], value)
    return g


def _device(data: dict[str, Any]) -> Iterator[Metric]:
    build = InfoMetricFamily(
        "sensorcast_build", "The agent's version, Python and interpreter runtime (value 1)"
    )
    build.add_metric([], {k: str(v) for k, v in data["build"].items() if v is not None})
    yield build
    yield _gauge("sensorcast_connected", "1 while connected to the broker", data["connected"])
    yield CounterMetricFamily(
        "sensorcast_reconnects", "Reconnects to the broker", value=data["reconnects"]
    )
    yield CounterMetricFamily(
        "sensorcast_failovers",
        "Connections to another broker of mqtt.url than the one before",
        value=data["failovers"],
    )
    yield CounterMetricFamily(
        "sensorcast_shed", "Reading batches dropped under load", value=data["shed"]
    )


def _outbox(box: dict[str, Any]) -> Iterator[Metric]:
    yield _gauge("sensorcast_outbox_depth", "Messages waiting for an ack", box["depth"])
    yield _gauge("sensorcast_outbox_bytes", "Payload bytes waiting for an ack", box["bytes"])
    yield _gauge("sensorcast_outbox_high_water", "Most messages waiting at once", box["high_water"])
    yield CounterMetricFamily(
        "sensorcast_outbox_dropped", "Dropped when the outbox was full", value=box["dropped"]
    )
    yield CounterMetricFamily(
        "sensorcast_published", "Messages handed to the broker from the outbox", value=box["sent"]
    )
    yield CounterMetricFamily(
        "sensorcast_refused", "Messages the broker refused", value=box["refused"]
    )
    yield CounterMetricFamily(
        "sensorcast_outbox_late",
        "Forecasts sent after waiting past their staleness limit (MQTT 5: minimum expiry)",
        value=box["late"],
    )
    yield _gauge("sensorcast_outbox_degraded", "1: memory only", 1.0 if box["degraded"] else 0.0)


class _StreamFamilies:
    """The per-stream families, filled one stream at a time."""

    def __init__(self) -> None:
        c, g = CounterMetricFamily, GaugeMetricFamily
        self.input = c("sensorcast_input_messages", "Messages the sources parsed", labels=STREAM)
        self.accepted = c("sensorcast_readings_accepted", "Values windows took", labels=STREAM)
        self.rejected = c(
            "sensorcast_readings_rejected", "Readings rejected", labels=["stream", "reason"]
        )
        self.gaps = c("sensorcast_gaps", "Gaps that invalidated the window", labels=STREAM)
        self.forecasts = c("sensorcast_forecasts", "Forecasts made", labels=STREAM)
        self.beyond = c(
            "sensorcast_forecasts_out_of_range",
            "Forecasts made from a window outside the model's verified range",
            labels=STREAM,
        )
        self.fallback_n = c(
            "sensorcast_forecasts_fallback", "Forecasts published as the baseline's", labels=STREAM
        )
        self.fallback = g(
            "sensorcast_fallback_active", "1 while the baseline is published", labels=STREAM
        )
        self.last = g(
            "sensorcast_last_forecast_timestamp_seconds", "Window end of the latest", labels=STREAM
        )
        self.model = InfoMetricFamily("sensorcast_model", "The bundle a stream runs", labels=STREAM)
        self.ratio = g(
            "sensorcast_forecast_error_ratio", "Rolling error / promised error", labels=STREAM
        )
        self.drift = g("sensorcast_drift", "1 while drifting", labels=STREAM)
        self.level = g(
            "sensorcast_interval_level_ratio", "Nominal coverage of the interval", labels=STREAM
        )
        self.coverage = g(
            "sensorcast_interval_coverage_ratio",
            "Rolling share of actuals inside the interval (mean over steps and targets)",
            labels=STREAM,
        )
        self.skill = g(
            "sensorcast_forecast_skill",
            "1 - MAE(model) / MAE(baseline) over all steps",
            labels=["stream", "baseline"],
        )
        self.anomaly = g("sensorcast_anomaly_active", "1 while an anomaly is open", labels=STREAM)
        self.anomalies = c("sensorcast_anomalies", "Anomalies that started", labels=STREAM)
        self.shadow = g(
            "sensorcast_shadow_error_ratio",
            "Shadow model's rolling MAE / live model's, same actuals (below 1: shadow better)",
            labels=STREAM,
        )
        self.latency = HistogramMetricFamily(
            "sensorcast_inference_seconds", "Time per forecast (model invoke)", labels=STREAM
        )

    def add(self, name: str, st: dict[str, Any]) -> None:
        """One stream's samples (``st``: its part of the snapshot)."""
        for family, key in (
            (self.input, "input_messages"),
            (self.accepted, "accepted"),
            (self.gaps, "gaps"),
            (self.forecasts, "forecasts"),
            (self.beyond, "forecasts_out_of_range"),
            (self.fallback_n, "forecasts_fallback"),
            (self.anomalies, "anomalies"),
            (self.fallback, "fallback"),
            (self.anomaly, "anomaly"),
            (self.drift, "drift"),
            (self.last, "last_forecast"),
            (self.ratio, "quality_ratio"),
            (self.level, "level"),
            (self.coverage, "coverage"),
        ):
            if st[key] is not None:  # no sample rather than a made-up one
                family.add_metric([name], float(st[key]))
        for reason, n in st["rejected"].items():
            self.rejected.add_metric([name, reason], n)
        for baseline, skill in st["skill"].items():
            if skill is not None:
                self.skill.add_metric([name, baseline], skill)
        shadow = st["shadow"]
        if shadow is not None and shadow["mae_ratio"] is not None:
            self.shadow.add_metric([name], shadow["mae_ratio"])
        self.model.add_metric([name], {"model": st["model"], "quantization": st["quantization"]})
        lat = st["latency"]
        self.latency.add_metric([name], lat["buckets"], sum_value=lat["sum_s"])

    def __iter__(self) -> Iterator[Metric]:
        return iter(v for v in vars(self).values() if isinstance(v, Metric))


def _streams(streams: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    families = _StreamFamilies()
    for name, st in streams.items():
        families.add(name, st)
    yield from families
