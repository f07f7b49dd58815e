"""Forecasts from a window outside the range the bundle was verified on: published, marked
``"out_of_range": true`` and counted (issue 15, 1 c).

Real parts: the demo model re-embedded with a manifest that carries a ``verified_range``
(tests/support/manifests.py), the real interpreter, the agent's own config loader, streams,
pipeline, publisher, in-memory outbox, quality tracker and model reloader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sensorcast.agent.config import Config, load_config
from sensorcast.agent.control.homeassistant import discovery_messages
from sensorcast.agent.forecast.forecaster import Forecaster, range_bounds
from sensorcast.agent.forecast.manifest import Manifest, read_bundle
from sensorcast.agent.pipeline import Pipeline
from sensorcast.agent.publish.outbox import Outbox
from sensorcast.agent.reloader import ModelReloader
from sensorcast.agent.sources.base import Reading
from sensorcast.agent.streams import Stream, equip, load_streams

from tests.support.configs import agent_config, stdin_stream
from tests.support.manifests import bundle_bytes, demo_manifest
from tests.support.paths import DEMO_DIR

#: The demo's first rows (temperature 19.4..20.0 °C, humidity 50.2..53.1 %) and their times.
CSV = np.loadtxt(DEMO_DIR / "room.csv", delimiter=",", skiprows=1)[:40]
ROWS, START = CSV[:, 1:], float(CSV[0, 0])
PERIOD = 300.0  # the demo bundle's
#: What the demo's rows stay inside (with room to spare): in range.
WIDE = {"temperature": [15.0, 25.0], "humidity": [40.0, 60.0]}


def _bundle(path: Path, verified: dict[str, list[float]] | None) -> Path:
    """The demo model with ``verified_range`` (None: a bundle from before the field)."""
    data = demo_manifest()
    data.pop("verified_range", None)
    if verified is not None:
        data["verified_range"] = verified
    path.write_bytes(bundle_bytes(data))
    return path


def _raise(_streams: list[Stream], exc: Exception, _doing: str) -> None:
    raise exc  # a model that fails in a test is the test's failure


def _agent(tmp_path: Path, bundle: Path, **keys: Any) -> tuple[Config, Stream, Outbox, Pipeline]:
    """One stream on ``bundle`` with the agent's defaults, publishing into a memory outbox."""
    cfg = load_config(agent_config(tmp_path, device="pi", streams=[stdin_stream(bundle, **keys)]))
    (stream,) = load_streams(cfg)
    outbox = Outbox(None)
    equip(stream, cfg, outbox)
    return cfg, stream, outbox, Pipeline([stream], _raise)


def _feed(pipeline: Pipeline, rows: np.ndarray, first: int) -> None:
    """Rows (one value per feature) for slots ``first``.. after the demo's start; the last
    slot is closed by the clock, as the agent's loop would."""
    for i, row in enumerate(rows, first):
        ts = START + i * PERIOD
        pipeline.ingest([Reading(0, f, ts, float(v)) for f, v in enumerate(row)], ts + 1)
        pipeline.forecast_due()
    pipeline.tick(START + (first + len(rows) + 1) * PERIOD)
    pipeline.forecast_due()


def _published(outbox: Outbox) -> list[dict[str, Any]]:
    """The forecasts in the outbox (not the anomaly messages beside them)."""
    pending = outbox.pending(limit=1000)
    return [json.loads(m.payload) for m in pending if m.topic.endswith("/forecast")]


def test_bounds_are_rounded_outward_to_float32() -> None:
    low, high = range_bounds(("a", "b", "c"), {"a": (0.1, 20.1), "b": (-1.0, 1.0)})
    assert low.dtype == high.dtype == np.float32
    assert low[0] <= 0.1 and high[0] >= 20.1  # float32(0.1) > 0.1: one step down
    assert np.float32(0.1) >= low[0] and np.float32(20.1) <= high[0]  # a reading of it is in
    assert (low[1], high[1]) == (-1.0, 1.0)  # exact in float32: unchanged
    assert (low[2], high[2]) == (-np.inf, np.inf)  # not listed (e.g. computed): unbounded


def test_forecaster_checks_the_window_against_its_bundles_range(tmp_path: Path) -> None:
    ranged = Forecaster(read_bundle(_bundle(tmp_path / "r.tflite", {"temperature": [19.0, 20.5]})))
    window = ROWS[:24].astype(np.float32)  # as the agent's window holds it
    assert ranged.checks_range and not ranged.out_of_range(window)

    edge = window.copy()
    edge[3, 0], edge[7, 0] = 19.0, 20.5  # on the bounds: in
    assert not ranged.out_of_range(edge)
    for row, value in ((0, 20.51), (23, 18.99), (12, np.float32(np.inf))):
        beyond = window.copy()
        beyond[row, 0] = value
        assert ranged.out_of_range(beyond), (row, value)
    humid = window.copy()
    humid[5, 1] = 99.0  # humidity has no recorded range: never out of it
    assert not ranged.out_of_range(humid)

    old = Forecaster(read_bundle(_bundle(tmp_path / "old.tflite", None)))
    hot = window.copy()
    hot[:, 0] = 80.0
    assert not old.checks_range and not old.out_of_range(hot)  # no range: never marked


def test_the_moving_check_agrees_with_the_whole_windows(tmp_path: Path) -> None:
    """What the pipeline asks (only the rows appended since the last forecast are checked)
    is what the whole window's check says: across gaps, restores and two windows in turn."""
    from sensorcast.agent.window import Window

    ranged = Forecaster(read_bundle(_bundle(tmp_path / "r.tflite", {"temperature": [19.0, 20.5]})))
    rng = np.random.default_rng(3)
    windows = [Window(2, 24, PERIOD, max_gap_s=3 * PERIOD) for _ in range(2)]
    slots = [0, 0]
    seen = {True: 0, False: 0}
    for step in range(3000):
        which = int(rng.random() < 0.1)  # now and then the other window
        w = windows[which]
        slots[which] += 1 + (6 if rng.random() < 0.01 else 0)  # a gap empties the window
        for _ in range(int(rng.integers(1, 3))):  # one row, or two at once
            ts = START + slots[which] * PERIOD + 1
            temp = 19.7 + (rng.normal(0, 2) if rng.random() < 0.02 else rng.normal(0, 0.1))
            w.add(0, ts, float(temp), ts + 1)
            w.add(1, ts, 50.0, ts + 1)
            slots[which] += 1
        if step % 500 == 499:  # a warm restart: the rows come back from the snapshot
            w.restore(w.snapshot())
        if w.ready:
            view = w.view()
            whole = ranged.out_of_range(view)
            assert ranged.out_of_range_moved(view, w.appended) == whole, step
            seen[whole] += 1
    assert seen[True] > 50 and seen[False] > 50  # both verdicts were exercised


def test_forecasts_are_published_marked_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, stream, outbox, pipeline = _agent(tmp_path, _bundle(tmp_path / "room.tflite", WIDE))
    _feed(pipeline, ROWS[:24], 0)  # a full window, in range: one forecast
    hot = ROWS[24].copy()
    hot[0] = 31.0  # a heat wave the model never saw
    _feed(pipeline, hot[None], 24)  # its window holds one value beyond: forecast, marked
    _feed(pipeline, ROWS[25:27], 25)  # still in the window: marked again
    said = [r.getMessage() for r in caplog.records if "verified on" in r.getMessage()]
    assert said == [  # once, when it began
        f"stream room: window outside the range model {stream.label} was verified on "
        "(temperature 31 > 25 (verified 15..25)): its forecasts are published marked "
        "out_of_range"
    ]

    sent = _published(outbox)
    assert [m["out_of_range"] for m in sent] == [False, True, True, True]  # nothing dropped
    assert [m["seq"] for m in sent] == [0, 1, 2, 3]
    # Every window ending at slots 24..47 holds the hot row; from slot 48 on it has left.
    _feed(pipeline, ROWS[27:40], 27)
    _feed(pipeline, np.tile(ROWS[39], (12, 1)), 40)  # slots 40..51
    flags = [m["out_of_range"] for m in _published(outbox)]
    assert flags == [False] + [True] * 24 + [False] * 4, flags

    counters = stream.counters()
    assert counters["forecasts"] == 29 and counters["forecasts_out_of_range"] == 24
    assert stream.quality is not None
    report = stream.quality.report(stream.name, stream.label, 0.0)
    assert report["forecasts"] == 29 and report["forecasts_out_of_range"] == 24


def test_home_assistant_shows_it_as_an_attribute(tmp_path: Path) -> None:
    cfg, stream, outbox, pipeline = _agent(tmp_path, _bundle(tmp_path / "room.tflite", WIDE))
    hot = ROWS[:25].copy()
    hot[24, 0] = 31.0
    _feed(pipeline, hot, 0)
    config = discovery_messages(cfg, [("room", stream.manifest)], "pi/status")[0][1]
    template = json.loads(config)["json_attributes_template"]
    from tests.support.ha_templates import environment  # imports jinja2, a dev tool

    env = environment()  # as Home Assistant: sandboxed, with its filters (timestamp_utc)
    sent = [m.payload for m in outbox.pending(limit=10) if m.topic.endswith("/forecast")]
    older = json.dumps({k: v for k, v in json.loads(sent[0]).items() if k != "out_of_range"})
    shown = [
        json.loads(env.from_string(template).render(value_json=json.loads(p)))["out_of_range"]
        for p in (*sent, older)  # a retained forecast from an agent before the field: false
    ]
    assert shown == [False, True, False]


def test_a_reloaded_bundle_brings_its_own_range(tmp_path: Path) -> None:
    model = _bundle(tmp_path / "room.tflite", WIDE)
    cfg, stream, outbox, pipeline = _agent(tmp_path, model)
    _feed(pipeline, ROWS[:24], 0)
    reloader = ModelReloader(cfg, [stream], outbox, lambda: None, lambda: None)
    low = float(ROWS[1:25, 0].min()) + 0.01  # the next window reaches below this one's range
    _bundle(model, {"temperature": [low, 25.0]})
    reloader.reload(only_changed=False)
    assert stream.bundle.manifest.verified_range == {"temperature": (low, 25.0)}
    _feed(pipeline, ROWS[24:25], 24)
    _bundle(model, None)  # and a bundle from before the field: unmarked
    reloader.reload(only_changed=False)
    _feed(pipeline, ROWS[25:26], 25)

    sent = _published(outbox)
    assert [m["out_of_range"] for m in sent] == [False, True, False]
    assert stream.counters()["forecasts_out_of_range"] == 1
    assert stream.quality is not None  # a new model's tracker counts its own forecasts
    assert stream.quality.report(stream.name, stream.label, 0.0)["forecasts_out_of_range"] == 0


@pytest.mark.convert
def test_a_rollout_is_judged_on_the_sensors_window_only(tmp_path: Path) -> None:
    """A single-step model rolled out 3 steps: its second and third steps take its own
    predictions as input. Those are the model's output, not an input it was never verified
    on: only the window the sensors gave decides ``out_of_range``."""
    import tensorflow as tf
    from sensorcast.convert.bundle import embed_manifest

    # A real single-step TFLite model, small and exact: the last temperature + 100 (no norm:
    # reading units). TensorFlow's converter alone; sensorcast's would verify it for 30 s.
    @tf.function(input_signature=[tf.TensorSpec((1, 24, 2), tf.float32)])
    def step(x: Any) -> Any:
        return x[:, -1, :1] + 100.0

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [step.get_concrete_function()], step
    )
    manifest = Manifest(
        window=24,
        features=("temperature", "humidity"),
        targets=("temperature",),
        horizon=1,
        period_s=PERIOD,
        quantization="float32",
        verified_range={"temperature": (15.0, 25.0), "humidity": (40.0, 60.0)},
    )
    out = tmp_path / "one.tflite"
    out.write_bytes(embed_manifest(converter.convert(), manifest))

    _, stream, outbox, pipeline = _agent(tmp_path, out, rollout_steps=3)
    _feed(pipeline, ROWS[:25], 0)
    sent = _published(outbox)
    assert len(sent) == 2
    last = ROWS[23, 0]  # steps 2 and 3 took 100 °C and more as input
    np.testing.assert_allclose(sent[0]["values"], [[last + 100], [last + 200], [last + 300]])
    assert [m["out_of_range"] for m in sent] == [False, False]
    assert stream.counters()["forecasts_out_of_range"] == 0

    hot = ROWS[25].copy()
    hot[1] = 70.0  # humidity beyond its range, in the sensors' window
    _feed(pipeline, hot[None], 25)
    assert _published(outbox)[-1]["out_of_range"] is True
