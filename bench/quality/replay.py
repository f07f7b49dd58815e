"""Drive the agent's own pipeline through a series in data time, in-process.

``Service(cfg).open()`` loads the bundle and builds the streams, quality tracker, anomaly
detector, outbox and pipeline, with no network and no threads. Each row becomes one
reading per feature at the row's timestamp, handed to ``pipeline.ingest`` with that time
as ``now``; ``pipeline.tick`` then moves the clock a few seconds on (past the window's
close delay, so a period with no reading still closes, as on a live agent) and
``pipeline.forecast_due`` forecasts what moved. After every row the outbox is read back
(``Outbox.pending``) and acknowledged, as the sender would: the forecast and anomaly
payloads are what a subscriber would have received.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from sensorcast.agent.config import load_config
from sensorcast.agent.service import Service
from sensorcast.agent.sources.base import Reading

__all__ = ["Run", "replay"]

TICK_AFTER_S = 3.0  #: How far past a row's time the clock moves (> the 2 s close delay).


@dataclass
class Run:
    """What the agent published during one replay."""

    forecasts: list[dict[str, Any]] = field(default_factory=list)
    #: Anomaly payloads, each with ``"_clock"``: the data time (s) when it was published.
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    tracker: dict[str, Any] = field(default_factory=dict)  #: The tracker's view at the end.
    counters: dict[str, Any] = field(default_factory=dict)


def _config(directory: Path, bundle: Path, level: float) -> Path:
    path = directory / "agent.toml"
    path.write_text(
        '[device]\nid = "bench"\n'
        f'[state]\ndir = "{directory / "state"}"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1"\n'  # never connected: open() only
        "[homeassistant]\nenabled = false\n"
        '[[streams]]\nname = "s"\n'
        f'model = "{bundle}"\ninput_topic = "bench/in"\nlevel = {level}\n'
    )
    return path


def replay(bundle: Path, ts: np.ndarray, values: np.ndarray, level: float = 0.8) -> Run:
    """Feed ``values`` (rows, features; NaN: no reading) at ``ts`` (Unix s) to a fresh
    agent running ``bundle``; return its payloads."""
    work = Path(tempfile.mkdtemp(prefix="sensorcast-quality-"))
    service = Service(load_config(_config(work, bundle, level), env={}))
    try:
        service.open()
        return _drive(service, ts, values)
    finally:
        service.close()
        shutil.rmtree(work, ignore_errors=True)


def _drive(service: Service, ts: np.ndarray, values: np.ndarray) -> Run:
    pipeline, outbox, run = service.pipeline, service.outbox, Run()
    present = np.isfinite(values)
    for row in range(len(ts)):
        now = float(ts[row])
        batch = [
            Reading(0, feature, now, float(values[row, feature]))
            for feature in range(values.shape[1])
            if present[row, feature]
        ]
        pipeline.ingest(batch, now)
        pipeline.forecast_due()
        pipeline.tick(now + TICK_AFTER_S)
        pipeline.forecast_due()
        _drain(outbox, now, run)
    stream = service.streams[0]
    if stream.quality is not None:
        run.tracker = _tracker(stream.quality)
    run.counters = service.counters()
    return run


def _drain(outbox: Any, clock: float, run: Run) -> None:
    while True:
        messages = outbox.pending(0, 500)
        if not messages:
            return
        for m in messages:
            if m.topic.endswith("/forecast"):
                run.forecasts.append(json.loads(m.payload))
            elif m.topic.endswith("/anomaly"):
                run.anomalies.append({**json.loads(m.payload), "_clock": clock})
            outbox.ack(m.id)


def _tracker(q: Any) -> dict[str, Any]:
    """The tracker's own rolling figures (its last ``samples`` residuals per step)."""

    def listed(table: Optional[np.ndarray]) -> Optional[list[Optional[float]]]:
        if table is None:
            return None
        flat = np.asarray(table, dtype=float).reshape(len(table), -1)[:, 0]
        return [None if not np.isfinite(v) else float(v) for v in flat]

    return {
        "coverage_mean": q.coverage_mean(),
        "coverage_by_step": listed(q.coverage()),
        "skill": q.skill(),
        "skill_by_step": {k: listed(v) for k, v in q.skill_by_step().items()},
    }
