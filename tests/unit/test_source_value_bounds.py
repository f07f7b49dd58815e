"""Every source hands a value that is finite as a double but not as float32 (1e300), and a
timestamp before 2000, on to the window as the agent builds it, which rejects them with a
reason (``out_of_range``, ``too_old``): none of them becomes infinity in the window."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from sensorcast.agent.config import StreamConfig
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.agent.sources.base import Reading
from sensorcast.agent.sources.command import CommandSource
from sensorcast.agent.sources.file import FileSource
from sensorcast.agent.sources.mqtt import MqttJsonSource, MqttValueSource
from sensorcast.agent.sources.stdin import StdinSource
from sensorcast.agent.streams import build_window as service_window
from sensorcast.agent.window import REASONS

from tests.conftest import DEMO_DIR

FEATURES = ("temperature", "humidity")
NOW = time.time() + 3600  # Unix s: sources stamp some readings with the real clock


class WindowSink:
    """Adds readings to a stream's window, built as the service builds it (the demo model:
    temperature, humidity), keeping each one's outcome."""

    def __init__(self) -> None:
        model = DEMO_DIR / "room.tflite"
        sc = StreamConfig("room", model, "in/room", None, "mean", None, None, None)
        self.window = service_window(sc, read_bundle(model))
        self.outcomes: list[str] = []

    def __call__(self, readings: list[Reading]) -> None:
        for r in readings:
            result = self.window.add(r.feature, r.ts, r.value, NOW)
            self.outcomes.append(REASONS.get(result, "accepted"))


def test_mqtt_json_and_value_sources() -> None:
    sink = WindowSink()
    json_source = MqttJsonSource(0, "room", FEATURES, "in/room", sink)
    json_source.handle(b'{"temperature": 1e300, "humidity": -1e39}', NOW)
    json_source.handle(b'{"ts": -5, "temperature": 20, "humidity": 40}', NOW)
    value_source = MqttValueSource(0, "room", FEATURES, 1, "in/hum", sink)
    value_source.handle(b"1e300", NOW)
    value_source.handle(b'{"value": -3.5e38}', NOW)
    value_source.handle(b'{"ts": 0, "value": 40}', NOW)
    assert sink.outcomes == ["out_of_range"] * 2 + ["too_old"] * 2 + ["out_of_range"] * 2 + [
        "too_old"
    ]
    assert sink.window.filled == 0 and np.isfinite(sink.window._sum).all()


def test_file_source_after_scale_and_offset(tmp_path: Path) -> None:
    sink = WindowSink()
    sensor = tmp_path / "in_temp_input"
    for text, scale in (("1e300", 1.0), ("3.0e37", 100.0), ("21000", 0.001)):
        sensor.write_text(text + "\n")
        source = FileSource(0, "room", FEATURES, 0, sensor, sink, scale=scale)
        sink(source.read_once(NOW))
    # 3e37 is a float32, but not once scaled to 3e39
    assert sink.outcomes == ["out_of_range", "out_of_range", "accepted"]


def test_command_source_number_and_json() -> None:
    sink = WindowSink()
    number = CommandSource(0, "room", FEATURES, 0, [sys.executable, "-c", "print(1e300)"], sink)
    sink(number.read_once(NOW))
    script = 'print(\'{"ts": -5, "temperature": 1, "humidity": -1e39}\')'
    whole = CommandSource(0, "room", FEATURES, None, [sys.executable, "-c", script], sink)
    sink(whole.read_once(NOW))
    assert sink.outcomes == ["out_of_range", "too_old", "out_of_range"]


def test_stdin_source() -> None:
    sink = WindowSink()
    read_end, write_end = os.pipe()
    os.write(write_end, b'{"temperature": 1e300, "humidity": 40}\n{"ts": -5, "temperature": 1}\n')
    os.close(write_end)
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        source = StdinSource(0, "room", FEATURES, sink, file=pipe)
        source.start()
        assert source.join(10)
    assert sink.outcomes == ["out_of_range", "accepted", "too_old"]
    assert source.rejected == {"missing_feature": 1}  # humidity absent from the second line
