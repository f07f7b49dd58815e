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


def test_the_reference_example_is_valid(tmp_path: Path) -> None:
    """docs/config.md's complete example parses (files it names made up here)."""
    import re

    from tests.conftest import REPO

    text = (REPO / "docs" / "config.md").read_text()
    example = re.search(r"## A complete example\n\n```toml\n(.*?)```", text, re.S)
    assert example is not None
    body = example.group(1)
    for path in re.findall(r'"(/[^"]+)"', body):
        if "*" not in path and "sys/" not in path:
            p = tmp_path / path.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("secret\n")
            body = body.replace(f'"{path}"', f'"{p}"')
    sysfs = tmp_path / "in_temp_input"
    sysfs.write_text("21000\n")
    body = body.replace('"/sys/bus/iio/devices/iio:device0/in_temp_input"', f'"{sysfs}"')
    (tmp_path / "kitchen.tflite").write_bytes(b"x")
    cfg = load_config(write_raw(tmp_path, body), env={})
    assert cfg.mqtt.tls and cfg.mqtt.port == 8883 and cfg.mqtt.password is not None
    assert "secret" not in repr(cfg)  # the password never shows
    (stream,) = cfg.streams
    kinds = {(s.type, s.feature) for s in stream.sources}
    assert kinds == {("file", "temperature"), ("mqtt", None)}


def write_raw(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "full.toml"
    path.write_text(text)
    return path


def test_source_and_mqtt_problems_have_key_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[mqtt]\nurl = "mqtt://u:pw@host"\npassword = "a"\npassword_file = "b"\n'
        'ca_file = "ca.crt"\n'
        '[[streams]]\nname = "room"\nmodel = "room.tflite"\n'
        '[streams.inputs.humidity]\ntype = "file"\npath = "/nonexistent/humidity"\n'
        "interval_s = 0\n"
        '[streams.inputs.temperature]\ntype = "stdin"\n'
        '[[streams.sources]]\ntype = "command"\ncommand = "not a list"\n',
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    text = str(err.value)
    for expected in (
        "mqtt.url: do not put a password in the URL",
        "mqtt: give only one of password, password_file",
        "mqtt.ca_file: file not found",
        "streams[0].inputs.humidity.path: file not found",
        "streams[0].inputs.humidity.interval_s: must be > 0",
        "streams[0].inputs.temperature.type: must be one of file, mqtt_value, command",
        "streams[0].sources[0].command: must be a list",
    ):
        assert expected in text, expected


def test_environment_overrides_for_containers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[device]\nid = "file-id"\n[mqtt]\nurl = "mqtt://file-host"\n'
        '[[streams]]\nname = "r"\nmodel = "room.tflite"\ninput_topic = "x"\n',
    )
    env = {
        "SENSORCAST_DEVICE_ID": "env-id",
        "SENSORCAST_MQTT_URL": "mqtts://env-host",
        "SENSORCAST_MQTT_USERNAME": "u",
        "SENSORCAST_MQTT_PASSWORD": "p",
    }
    cfg = load_config(path, env=env)
    assert cfg.device.id == "env-id" and cfg.mqtt.client_id == "sensorcast-env-id"
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == ("env-host", 8883, True)
    assert cfg.mqtt.username == "u" and cfg.mqtt.password is not None
    assert cfg.mqtt.password.reveal() == "p"


def test_systemd_credential(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt").write_text("from-systemd\n")
    path = write(
        tmp_path,
        '[mqtt]\nusername = "u"\npassword_credential = "mqtt"\n'
        '[[streams]]\nname = "r"\nmodel = "room.tflite"\ninput_topic = "x"\n',
    )
    cfg = load_config(path, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.mqtt.password is not None and cfg.mqtt.password.reveal() == "from-systemd"
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY is not set"):
        load_config(path, env={})
