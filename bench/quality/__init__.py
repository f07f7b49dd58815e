"""Forecast-quality benchmark: real data replayed through the real agent pipeline.

A held-out stretch of a real series (the Greensboro weather year's September-December,
which its model never saw; the demo room's held-out days) goes through
``Service(cfg).open()``'s pipeline in-process, in data time, reading by reading: the
forecasts' bands, the quality tracker and the anomaly detector are the agent's own. The
benchmark reads the forecast and anomaly payloads back from the outbox and scores them
against the data: empirical coverage of the nominal band per step, skill against the naive
baselines per step, anomaly false alarms on the clean data, and detection delay for
injected faults (a level step, a stuck sensor, a dropout).

Modules: ``series`` (the data sets), ``faults`` (what is injected), ``replay`` (the
pipeline, driven), ``score`` (the figures), ``report`` (RESULTS-quality.md), ``cli``.
"""

from __future__ import annotations

__all__: list[str] = []
