"""``[mqtt] url`` as a list of brokers (a cluster behind several addresses): parsing, the
environment's comma-separated list, one-line errors, and the order the link tries them in."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
from sensorcast.agent.config import MqttConfig, load_config
from sensorcast.agent.config.mqtt import broker_urls
from sensorcast.agent.errors import ConfigError
from sensorcast.agent.publish.failover import Rotation, brokers_of

STREAM = '[[streams]]\nname = "r"\nmodel = "room.tflite"\ninput_topic = "x"\n'


def _load(tmp_path: Path, url: str, env: Optional[dict[str, str]] = None) -> MqttConfig:
    path = tmp_path / "sensorcast.toml"
    path.write_text(f'[device]\nid = "pi"\n[mqtt]\nurl = {url}\n{STREAM}')
    (tmp_path / "room.tflite").write_bytes(b"x")
    return load_config(path, env=env or {}).mqtt


def _error(tmp_path: Path, url: str, env: Optional[dict[str, str]] = None) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, url, env)
    return str(info.value)


def test_a_list_of_brokers_in_order(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '["mqtt://node-a.lan", "mqtt://node-b.lan:1884", "mqtt://10.0.0.3"]')
    assert cfg.url == "mqtt://node-a.lan"  # the first, as given
    assert (cfg.host, cfg.port, cfg.tls) == ("node-a.lan", 1883, False)
    assert cfg.brokers == (("node-a.lan", 1883), ("node-b.lan", 1884), ("10.0.0.3", 1883))
    assert brokers_of(cfg) == cfg.brokers
    assert broker_urls(cfg)[1] == "mqtt://node-b.lan:1884"


def test_a_single_url_has_no_broker_list(tmp_path: Path) -> None:
    for url in ('"mqtts://one.lan"', '["mqtts://one.lan"]'):
        cfg = _load(tmp_path, url)
        assert cfg.brokers == () and (cfg.host, cfg.port, cfg.tls) == ("one.lan", 8883, True)
        assert brokers_of(cfg) == (("one.lan", 8883),)


def test_the_environment_gives_a_comma_separated_list(tmp_path: Path) -> None:
    env = {"SENSORCAST_MQTT_URL": "mqtts://a.lan, mqtts://b.lan:8884"}
    cfg = _load(tmp_path, '"mqtt://file.lan"', env)
    assert cfg.url == "mqtts://a.lan" and cfg.tls
    assert cfg.brokers == (("a.lan", 8883), ("b.lan", 8884))
    text = _error(tmp_path, '"mqtt://file.lan"', {"SENSORCAST_MQTT_URL": "mqtt://a.lan,"})
    assert "mqtt.url[1]: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got ''" in text


def test_mixed_schemes_are_one_line_naming_the_fix(tmp_path: Path) -> None:
    text = _error(tmp_path, '["mqtts://a.lan", "mqtt://b.lan"]')
    assert "mqtt.url: mixes mqtt:// and mqtts:// brokers" in text
    assert "use mqtts:// for every broker" in text and "\n" not in text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("[]", "mqtt.url: must be a string or a non-empty list of strings, got []"),
        ("5", "mqtt.url: must be a string or a non-empty list of strings, got 5"),
        ('["mqtt://a.lan", 7]', "mqtt.url[1]: must be a string, got 7"),
        ('["mqtt://a.lan", "http://b.lan"]', "mqtt.url[1]: use mqtt://HOST[:PORT]"),
        ('["mqtt://a.lan", "mqtt://u:pw@b.lan"]', "mqtt.url[1]: do not put a password"),
        ('["mqtt://a.lan:1883", "mqtt://A.lan"]', "mqtt.url[1]: a.lan:1883 is mqtt.url[0] again"),
    ],
)
def test_bad_lists_name_the_entry(tmp_path: Path, url: str, expected: str) -> None:
    assert expected in _error(tmp_path, url)


def test_two_bad_entries_are_not_duplicates_of_each_other(tmp_path: Path) -> None:
    text = _error(tmp_path, '["mqtt://a.lan", "http://x", "ftp://y"]')
    assert "mqtt.url[1]:" in text and "mqtt.url[2]:" in text and "again" not in text


def _rotation(n: int, min_s: float = 1.0, max_s: float = 4.0) -> Rotation:
    brokers = tuple((f"b{i}", 1883) for i in range(n))
    return Rotation(MqttConfig("b0", 1883, "c", brokers=brokers if n > 1 else (),
                               reconnect_min_s=min_s, reconnect_max_s=max_s))  # fmt: skip


def test_failover_goes_round_without_waiting_then_backs_off() -> None:
    r = _rotation(3)
    assert (r.name, r.where) == ("b0:1883", "MQTT broker b0:1883 (1 of 3)")
    r.connected()
    assert r.lost() == 1.0  # the first retry, on the broker just lost
    assert [r.failed() for _ in range(3)] == [0.0, 0.0, 2.0]  # b1 and b2 at once, then wait
    assert r.name == "b0:1883"  # wrapped around
    assert [r.failed() for _ in range(3)] == [0.0, 0.0, 4.0]
    assert [r.failed() for _ in range(3)] == [0.0, 0.0, 4.0]  # capped at reconnect_max_s
    r.failed()
    assert r.connected() and r.failovers == 1 and r.name == "b1:1883"
    assert r.lost() == 1.0  # the backoff started over


def test_a_single_broker_backs_off_on_every_failure() -> None:
    r = _rotation(1)
    assert r.where == "MQTT broker b0:1883"
    assert not r.connected()
    assert [r.lost(), r.failed(), r.failed(), r.failed()] == [1.0, 2.0, 4.0, 4.0]
    assert not r.connected() and r.failovers == 0
