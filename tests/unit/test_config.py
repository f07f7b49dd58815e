"""Config validation: typed objects out, every problem reported at once with its key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sensorcast.agent.config import (
    Config,
    HomeAssistantConfig,
    MetricsConfig,
    ModelsConfig,
    MqttConfig,
    QualityConfig,
    SourceConfig,
    StreamConfig,
    UpdatesConfig,
    load_config,
)
from sensorcast.agent.errors import ConfigError


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
    cert, key = self_signed()
    for path in re.findall(r'"(/[^"]+)"', body):
        if "*" not in path and "sys/" not in path:
            p = tmp_path / path.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            # TLS files are loaded during validation: they must be a real certificate and key.
            p.write_bytes({".crt": cert, ".key": key}.get(p.suffix, b"secret\n"))
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


def self_signed(name: str = "sensorcast-test") -> tuple[bytes, bytes]:
    """A real self-signed certificate and its (unencrypted) key, PEM."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    text = str(err.value)
    assert "\n" not in text
    return text


STREAM = '[[streams]]\nname = "room"\nmodel = "room.tflite"\ninput_topic = "x"\n'


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[mqtt]\nconnect_timeout_s = inf\n" + STREAM, "mqtt.connect_timeout_s"),
        ("[mqtt]\nreconnect_max_s = nan\n" + STREAM, "mqtt.reconnect_max_s"),
        (STREAM + "max_gap_s = inf\n", "streams[0].max_gap_s"),
        (STREAM + "max_future_s = nan\n", "streams[0].max_future_s"),
        (STREAM + "close_delay_s = +inf\n", "streams[0].close_delay_s"),
        ("[quality]\ndrift_factor = nan\n" + STREAM, "quality.drift_factor"),
        ("[quality]\ndrift_after_s = inf\n" + STREAM, "quality.drift_after_s"),
        ("[metrics]\ninterval_s = nan\n" + STREAM, "metrics.interval_s"),
        ("[updates]\ntimeout_s = inf\n" + STREAM, "updates.timeout_s"),
        (
            STREAM
            + '[streams.inputs.humidity]\ntype = "file"\npath = "room.tflite"\nscale = nan\n',
            "streams[0].inputs.humidity.scale",
        ),
        (
            STREAM + '[streams.inputs.humidity]\ntype = "file"\npath = "room.tflite"\n'
            "offset = -inf\n",
            "streams[0].inputs.humidity.offset",
        ),
        (
            STREAM + '[[streams.sources]]\ntype = "command"\ncommand = ["/bin/true"]\n'
            "interval_s = inf\n",
            "streams[0].sources[0].interval_s",
        ),
    ],
    ids=lambda v: "" if "\n" in v else v,
)
def test_every_float_key_refuses_nan_and_inf_with_its_key_path(
    tmp_path: Path, toml: str, key: str
) -> None:
    assert f"{key}: must be a finite number" in config_error(write(tmp_path, toml))


def test_seconds_too_large_for_a_timer_are_refused(tmp_path: Path) -> None:
    text = config_error(write(tmp_path, STREAM + "max_gap_s = 1e300\n"))
    assert "streams[0].max_gap_s: must be at most" in text


@pytest.mark.parametrize("opener", ["[", "{x = "])
def test_deeply_nested_toml_is_one_clear_error(tmp_path: Path, opener: str) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("a = " + opener * 100_000)
    text = config_error(path)
    assert "not valid TOML" in text and "nested too deeply" in text


def test_a_huge_value_of_the_wrong_type_is_shown_short(tmp_path: Path) -> None:
    text = config_error(write(tmp_path, f"[mqtt]\nurl = [{', '.join(['1'] * 5000)}]\n" + STREAM))
    # a list of URLs is allowed: each bad entry is named by its index, the first few only
    assert "mqtt.url[0]: must be a string" in text and len(text) < 400


def _tls(tmp_path: Path, **files: bytes) -> Path:
    lines = ['[mqtt]\nurl = "mqtts://broker.lan"']
    for key, data in files.items():
        (tmp_path / key).write_bytes(data)
        lines.append(f'{key} = "{key}"')
    return write(tmp_path, "\n".join(lines) + "\n" + STREAM)


def test_real_tls_files_are_accepted(tmp_path: Path) -> None:
    cert, key = self_signed()
    cfg = load_config(_tls(tmp_path, ca_file=cert, cert_file=cert, key_file=key), env={})
    assert cfg.mqtt.ca_file == tmp_path / "ca_file" and cfg.mqtt.key_file == tmp_path / "key_file"


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("garbage_ca", "mqtt.ca_file: {d}/ca_file holds no PEM certificate"),
        ("key_as_ca", "mqtt.ca_file: {d}/ca_file holds no PEM certificate"),
        ("empty_ca", "mqtt.ca_file: {d}/ca_file holds no PEM certificate"),
        ("key_as_cert", "mqtt.cert_file: {d}/cert_file holds no PEM certificate"),
        ("cert_as_key", "mqtt.key_file: {d}/key_file holds no PEM private key"),
        ("garbage_key", "mqtt.key_file: {d}/key_file holds no PEM private key"),
        ("other_key", "mqtt.key_file: {d}/key_file is not the key of mqtt.cert_file"),
        ("encrypted_key", "mqtt.key_file: {d}/key_file is encrypted"),
    ],
    ids=lambda v: "" if " " in v else v,
)
def test_tls_files_that_are_not_what_they_say_are_config_errors(
    tmp_path: Path, case: str, needle: str
) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key = self_signed()
    _, other = self_signed("other")
    encrypted = serialization.load_pem_private_key(key, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    files = {
        "garbage_ca": {"ca_file": b"not a certificate\n"},
        "key_as_ca": {"ca_file": key},
        "empty_ca": {"ca_file": b""},
        "key_as_cert": {"cert_file": key, "key_file": key},
        "cert_as_key": {"cert_file": cert, "key_file": cert},
        "garbage_key": {"cert_file": cert, "key_file": b"-----BEGIN PRIVATE KEY-----\nAAAA\n"},
        "other_key": {"cert_file": cert, "key_file": other},
        "encrypted_key": {"cert_file": cert, "key_file": encrypted},
    }[case]
    assert needle.format(d=tmp_path) in config_error(_tls(tmp_path, **files))


def test_model_that_is_a_directory_or_a_device_says_what_it_is(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    text = config_error(
        write(
            tmp_path,
            '[[streams]]\nname = "a"\nmodel = "models"\ninput_topic = "x"\n'
            '[[streams]]\nname = "b"\nmodel = "/dev/zero"\ninput_topic = "y"\n'
            '[[streams]]\nname = "c"\nmodel = "gone.tflite"\ninput_topic = "z"\n',
        )
    )
    assert f"streams[0].model: {tmp_path}/models is a directory, not a file" in text
    assert "streams[1].model: /dev/zero is not a regular file (character device)" in text
    assert f"streams[2].model: file not found: {tmp_path}/gone.tflite" in text


def test_tls_file_that_is_a_directory_says_so(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    path = write(tmp_path, '[mqtt]\nurl = "mqtts://b"\nca_file = "certs"\n' + STREAM)
    assert f"mqtt.ca_file: {tmp_path}/certs is a directory" in config_error(path)


@pytest.mark.parametrize(
    "streams",
    [
        # two stdin sources on one stream
        '[[streams]]\nname = "a"\nmodel = "room.tflite"\n'
        '[[streams.sources]]\ntype = "stdin"\n[[streams.sources]]\ntype = "stdin"\n',
        # one on each of two streams
        '[[streams]]\nname = "a"\nmodel = "room.tflite"\n[[streams.sources]]\ntype = "stdin"\n'
        '[[streams]]\nname = "b"\nmodel = "room.tflite"\n[[streams.sources]]\ntype = "stdin"\n',
    ],
    ids=["one_stream", "two_streams"],
)
def test_two_stdin_sources_are_a_config_error(tmp_path: Path, streams: str) -> None:
    text = config_error(write(tmp_path, streams))
    assert "only one stdin source" in text and "already streams[0].sources[0]" in text


def test_models_max_bytes(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, STREAM), env={}).models.max_bytes == 64 * 1024 * 1024
    cfg = load_config(write(tmp_path, "[models]\nmax_bytes = 2097152\n" + STREAM), env={})
    assert cfg.models.max_bytes == 2 * 1024 * 1024
    text = config_error(write(tmp_path, "[models]\nmax_bytes = 1000\n" + STREAM))
    assert "models.max_bytes: must be at least 1048576" in text


def test_a_device_as_password_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nusername = "u"\npassword_file = "/dev/zero"\n' + STREAM)
    assert "mqtt.password_file: /dev/zero is not a regular file" in config_error(path)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 70000)
    path = write(tmp_path, f'[mqtt]\nusername = "u"\npassword_file = "{big}"\n' + STREAM)
    assert "is larger than a password file can be" in config_error(path)


def test_the_fleet_device_id_is_reserved(tmp_path: Path) -> None:
    # A device called "fleet" would take <prefix>/fleet/model/set, every device's update
    # topic, as its own.
    text = config_error(write(tmp_path, '[device]\nid = "fleet"\n' + STREAM))
    assert "device.id" in text and "reserved" in text


def test_every_default_is_the_schema_default(tmp_path: Path) -> None:
    """A key left out takes its dataclass field's default: defined once, in the schema."""
    cfg = load_config(
        write(
            tmp_path,
            '[device]\nid = "pi-1"\n[[streams]]\nname = "room"\nmodel = "room.tflite"\n'
            '[streams.inputs.temperature]\ntype = "file"\npath = "room.tflite"\n',
        ),
        env={},
    )
    assert (cfg.homeassistant, cfg.quality, cfg.metrics) == (
        HomeAssistantConfig(), QualityConfig(), MetricsConfig()
    )  # fmt: skip
    assert (cfg.updates, cfg.models) == (UpdatesConfig(), ModelsConfig())
    defaults = Config(cfg.path, cfg.device, cfg.mqtt, cfg.streams, cfg.state_dir)
    assert cfg == defaults
    expected = MqttConfig(host="127.0.0.1", port=1883, client_id="sensorcast-pi-1")
    assert cfg.mqtt == expected
    (stream,) = cfg.streams
    assert stream == StreamConfig(stream.name, stream.model, sources=stream.sources)
    (source,) = stream.sources
    assert source == SourceConfig(
        "file", "streams[0].inputs.temperature", "temperature", path=tmp_path / "room.tflite"
    )


def test_reading_a_config_loads_no_source_class_it_does_not_need(tmp_path: Path) -> None:
    """The source classes (threads, subprocesses, the JSON parser) load only for a config
    that names a source (``sensorcast health`` reads the config as a container health check)."""
    path = write(tmp_path, "[[streams]]\nname = 'a'\nmodel = 'room.tflite'\ninput_topic = 'x'\n")
    code = (
        "import sys; from pathlib import Path; from sensorcast.agent.config import load_config;"
        f"load_config(Path({str(path)!r}), {{}});"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('sensorcast.agent.'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = {m for m in done.stdout.split() if m.startswith("sensorcast.agent.sources.")}
    # The contract a source type implements, and the generic config of one: both light.
    assert loaded == {"sensorcast.agent.sources.base", "sensorcast.agent.sources.spec"}
