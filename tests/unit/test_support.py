"""The tests' own config builder: what it writes is the TOML a person would, value for value."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import agent_config, stdin_stream, to_toml, topic_stream

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def test_every_kind_of_value_reads_back_as_written(tmp_path: Path) -> None:
    doc: dict[str, Any] = {
        "device": {"id": "pi-1"},
        "mqtt": {"url": "mqtt://127.0.0.1:1", "retain": True, "qos": 1, "keepalive_s": 2.5},
        "metrics": {"interval_s": 1e-3, "big": 1e300, "inf": math.inf, "neg": -math.inf},
        "odd keys": {"a.b": 'quote " back\\slash\ttab\nnewline \x7f \x01 °C'},
        "streams": [
            {
                "name": "room",
                "model": tmp_path / "room.tflite",
                "features": ["temperature", "humidity"],
                "units": {"temperature": "°C"},
                "inputs": {"temperature": {"type": "file", "path": "/sys/x", "scale": 0.001}},
                "sources": [{"type": "stdin"}, {"type": "command", "command": ["a", "-c", "b"]}],
                "left_out": None,
            },
            {"name": "other", "model": "m.tflite", "input_topic": "in/#", "empty": []},
        ],
    }
    back = tomllib.loads(to_toml(doc))
    want: dict[str, Any] = {**doc}
    want["streams"] = [
        {k: str(v) if isinstance(v, Path) else v for k, v in doc["streams"][0].items()},
        doc["streams"][1],
    ]
    del want["streams"][0]["left_out"]
    assert back == want


def test_nan_is_written_as_nan() -> None:
    assert math.isnan(tomllib.loads(to_toml({"a": {"x": math.nan}}))["a"]["x"])


def test_values_toml_has_no_kind_for_are_refused() -> None:
    with pytest.raises(TypeError, match="no TOML for dict"):
        to_toml({"a": {"x": [1, {"b": 2}]}})


def test_agent_config_fills_in_the_usual_tables(tmp_path: Path) -> None:
    model = tmp_path / "room.tflite"
    path = agent_config(
        tmp_path, device="d", port=1883, prefix="p", mqtt={"protocol": "5"},
        state={"dir": tmp_path / "state"},
        streams=[stdin_stream(model, max_gap_s=60), topic_stream(model, "in", name="b")],
    )  # fmt: skip
    assert path == tmp_path / "agent.toml"
    assert tomllib.loads(path.read_text()) == {
        "device": {"id": "d"},
        "mqtt": {"url": "mqtt://127.0.0.1:1883", "topic_prefix": "p", "protocol": "5"},
        "state": {"dir": str(tmp_path / "state")},
        "streams": [
            {"name": "room", "model": str(model), "max_gap_s": 60, "sources": [{"type": "stdin"}]},
            {"name": "b", "model": str(model), "input_topic": "in"},
        ],
    }
