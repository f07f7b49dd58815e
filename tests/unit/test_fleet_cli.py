"""``sensorcast fleet``'s parser: the connection flags and their environment defaults, the
one-line errors and their exit codes, and ``rollout`` when its module is missing."""

from __future__ import annotations

import argparse
import builtins
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from sensorcast.agent.fleet import cli
from sensorcast.agent.fleet.client import Connection


def _conn(*argv: str, env: dict[str, str] | None = None) -> Connection:
    args = cli.parser(with_rollout=False).parse_args(["status", *argv])
    return cli.connection(args, env or {})


def test_connection_flags_and_their_defaults(tmp_path: Path) -> None:
    assert _conn() == Connection(urls=("mqtt://127.0.0.1:1883",))
    assert _conn(env={"SENSORCAST_MQTT_URL": "mqtt://a:1, mqtt://b:2"}).urls == (
        "mqtt://a:1", "mqtt://b:2",
    )  # fmt: skip
    got = _conn("--url", "mqtt://x", "--url", "mqtt://y:1884", "--topic-prefix", "farm",
                "--client-id", "ctl", env={"SENSORCAST_MQTT_URL": "mqtt://ignored"})  # fmt: skip
    assert got.urls == ("mqtt://x", "mqtt://y:1884") and got.prefix == "farm"
    assert got.client_id == "ctl"
    secret = tmp_path / "password"
    secret.write_text("s3cret\nrest\n")
    got = _conn("--username", "ops", "--password-file", str(secret))
    assert (got.username, got.password) == ("ops", "s3cret")
    assert "s3cret" not in repr(got)
    args = cli.parser(with_rollout=False).parse_args(["status"])
    env = {"SENSORCAST_MQTT_PASSWORD": "pw"}
    args.username = "ops"
    assert cli.connection(args, env).password == "pw"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--url", "http://x"], "--url 'http://x'"),
        (["--url", "mqtt://u:pw@x"], "no password in the URL"),
        (["--url", "mqtt://x:99999"], "--url"),
        (["--topic-prefix", "a/#"], "--topic-prefix"),
        (["--client-id", "ctl/1"], "--client-id"),
        (["--password-file", "/nonexistent/pw", "--username", "u"], "--password-file"),
        (["--ca-file", "/etc/hostname"], "TLS files need an mqtts://"),
        (["--url", "mqtts://x", "--ca-file", "/nonexistent.pem"], "--ca-file"),
        (["--url", "mqtts://x", "--cert-file", "/etc/hostname"], "give both"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sensorcast fleet: error: ") and words in err
    assert len(err.strip().splitlines()) == 1


def test_a_password_needs_a_user(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    assert cli.main(["status", "--password-file", str(secret)]) == 2
    assert "--username: required" in capsys.readouterr().err


def test_a_broker_that_cannot_be_reached_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        code = cli.main(["status", "--url", f"mqtt://127.0.0.1:{port}",
                         "--url", f"mqtt://127.0.0.1:{port}"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("sensorcast fleet: error: cannot reach any MQTT broker of --url")
    assert err.count(f"127.0.0.1:{port}: ") == 2 and len(err.strip().splitlines()) == 1


def test_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["status", "--settle", "soon"]) == 2
    assert cli.main(["status", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--json", "--stream", "--settle", "--url", "--topic-prefix", "--password-file"):
        assert flag in out


def test_rollout_without_its_module_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = builtins.__import__

    def missing(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sensorcast.agent.fleet.rollout_cli":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sensorcast.agent.fleet.rollout_cli", raising=False)
    monkeypatch.setattr(builtins, "__import__", missing)
    assert cli.main(["rollout", "bundle.tflite", "--stream", "room"]) == 2
    err = capsys.readouterr().err
    assert "rollout is not part of this install" in err and len(err.strip().splitlines()) == 1
    # status does not need it
    args = cli.parser(with_rollout=False).parse_args(["status", "--json"])
    assert isinstance(args, argparse.Namespace) and args.json


def test_rollout_gets_the_connection_flags() -> None:
    args = cli.parser().parse_args(
        ["rollout", "b.tflite", "--stream", "room", "--unsigned", "--url", "mqtt://h:1"]
    )
    assert cli.connection(args, {}).urls == ("mqtt://h:1",)
