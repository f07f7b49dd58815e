"""Config validation: typed objects out, every problem reported at once with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sensorcast.toml"
    path.write_text(text)
    (tmp_path / "room.tflite").write_bytes(b"x")
    return path


def test_minimal_config_from_the_issue(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            '[device]\nid = "pi-1"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'
            '[[streams]]\nname = "room"\nmodel = "room.tflite"\ninput_topic = "sensors/room"\n',
        )
    )
    assert cfg.device.id == "pi-1"
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.qos) == ("127.0.0.1", 1883, 1)
    assert cfg.mqtt.client_id == "sensorcast-pi-1"
    (stream,) = cfg.streams
    assert stream.model == tmp_path / "room.tflite"  # relative to the config file
    assert stream.resample == "mean" and stream.features is None


def test_every_problem_is_reported_with_its_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[device]\nid = "bad id!"\n[mqtt]\nurl = "http://x"\nqos = 3\ncolour = 1\n'
        '[[streams]]\nname = "room"\nmodel = "missing.tflite"\ninput_topic = "a/#"\n'
        '[[streams]]\nname = "room"\nmodel = "room.tflite"\ninput_topic = "b"\nresample = "max"\n',
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    for expected in (
        "device.id",
        "mqtt.url",
        "mqtt.qos",
        "mqtt.colour: unknown key",
        "streams[0].model: file not found",
        "streams[0].input_topic",
        "streams[1].resample",
    ):
        assert expected in text
    assert "\n" not in text


def test_missing_streams_and_required_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="add at least one"):
        load_config(write(tmp_path, "[device]\nid = 'x'\n"))
    with pytest.raises(ConfigError, match=r"streams\[0\].model: required"):
        load_config(write(tmp_path, "[[streams]]\nname = 'a'\ninput_topic = 'x'\n"))


def test_duplicate_stream_names(tmp_path: Path) -> None:
    text = "[[streams]]\nname = 'a'\nmodel = 'room.tflite'\ninput_topic = 'x'\n" * 2
    with pytest.raises(ConfigError, match="duplicate stream name"):
        load_config(write(tmp_path, text))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[device\n"))
