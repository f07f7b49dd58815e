"""TLS (CA, client certificates, hostname verification), passwords and MQTT 5 against a
real Mosquitto, with certificates made here by the openssl command."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agents import start_agent
from tests.support.brokers import MosquittoBroker, run_mosquitto
from tests.support.configs import agent_config, topic_stream
from tests.support.host import missing_tool

PASSWORD = "s3cret-Pa55"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)  # fmt: skip


def _make_cert(d: Path, name: str, ca: str, san: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
             cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        missing_tool("openssl is not installed: apt-get install openssl")
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "otherca")
    _make_cert(d, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    _make_cert(d, "wrongname", "ca", "DNS:not-this-host.example")
    _make_cert(d, "client", "ca", "DNS:client")
    return d


@pytest.fixture(scope="module")
def tls_broker(pki: Path) -> Iterator[MosquittoBroker]:
    yield from run_mosquitto(
        f"listener {{port}} 127.0.0.1\nallow_anonymous true\ncafile {pki}/ca.crt\n"
        f"certfile {pki}/server.crt\nkeyfile {pki}/server.key\nrequire_certificate true\n"
    )


@pytest.fixture(scope="module")
def wrong_name_broker(pki: Path) -> Iterator[MosquittoBroker]:
    yield from run_mosquitto(
        f"listener {{port}} 127.0.0.1\nallow_anonymous true\ncafile {pki}/ca.crt\n"
        f"certfile {pki}/wrongname.crt\nkeyfile {pki}/wrongname.key\n"
    )


@pytest.fixture(scope="module")
def password_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        missing_tool("mosquitto_passwd is not installed: apt-get install mosquitto")
    assert tool is not None
    passwd = tmp_path_factory.mktemp("passwd") / "passwd"
    subprocess.run([tool, "-b", "-c", str(passwd), "pi", PASSWORD], check=True)
    passwd.chmod(0o644)  # mosquitto may drop privileges
    yield from run_mosquitto(
        f"listener {{port}} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
    )


def _config(tmp_path: Path, demo_dir: Path, mqtt: dict[str, Any]) -> Path:
    return agent_config(
        tmp_path,
        device="sec",
        mqtt={**mqtt, "connect_timeout_s": 5},
        streams=[topic_stream(demo_dir / "room.tflite", "in/room")],
    )


def _run_until_online(config: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Start the agent; once it logs that it is online, stop it. Returns (exit code, stderr)."""
    lines = []
    with start_agent(config, stdin=subprocess.DEVNULL, env=env) as proc:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        for line in proc.stderr:
            lines.append(line)
            if " online as " in line:
                proc.send_signal(signal.SIGTERM)
            if time.monotonic() > deadline:
                proc.kill()
        proc.wait(20)
    return proc.returncode, "".join(lines)


def test_tls_with_client_certificate_and_hostname_verification(
    tls_broker: MosquittoBroker, pki: Path, demo_dir: Path, tmp_path: Path
) -> None:
    mqtt = {
        "url": f"mqtts://localhost:{tls_broker.port}",
        "ca_file": pki / "ca.crt",
        "cert_file": pki / "client.crt",
        "key_file": pki / "client.key",
    }
    code, log = _run_until_online(_config(tmp_path, demo_dir, mqtt))
    assert code == 0, log
    assert " online as sec" in log


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("unknown_ca", "certificate"),
        ("no_client_cert", "TLS with MQTT broker"),
    ],
)
def test_tls_problems_are_clear_errors_at_start(
    case: str, needle: str, tls_broker: MosquittoBroker, pki: Path, demo_dir: Path, tmp_path: Path
) -> None:
    ca = "otherca" if case == "unknown_ca" else "ca"
    mqtt = {"url": f"mqtts://localhost:{tls_broker.port}", "ca_file": pki / f"{ca}.crt"}
    if case == "unknown_ca":
        mqtt |= {"cert_file": pki / "client.crt", "key_file": pki / "client.key"}
    code, log = _run_until_online(_config(tmp_path, demo_dir, mqtt))
    assert code == 1
    errors = [ln for ln in log.splitlines() if ln.startswith("sensorcast: error:")]
    assert len(errors) == 1 and "Traceback" not in log, log
    assert needle in errors[0] or "refused" in errors[0] or "did not answer" in errors[0], errors


def test_hostname_verification_is_on_by_default(
    wrong_name_broker: MosquittoBroker, pki: Path, demo_dir: Path, tmp_path: Path
) -> None:
    mqtt = {"url": f"mqtts://127.0.0.1:{wrong_name_broker.port}", "ca_file": pki / "ca.crt"}
    code, log = _run_until_online(_config(tmp_path, demo_dir, mqtt))
    assert code == 1 and "TLS with MQTT broker" in log, log
    assert "IP address mismatch" in log or "hostname" in log.lower(), log
    code, log = _run_until_online(_config(tmp_path, demo_dir, {**mqtt, "tls_insecure": True}))
    assert code == 0, log


def test_password_from_a_file_and_from_the_environment(
    password_broker: MosquittoBroker, demo_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORD + "\n")
    base = {"url": f"mqtt://127.0.0.1:{password_broker.port}", "username": "pi"}
    code, log = _run_until_online(_config(tmp_path, demo_dir, {**base, "password_file": secret}))
    assert code == 0, log
    env = {
        "PATH": "/usr/bin:/bin",
        "SENSORCAST_MQTT_PASSWORD": PASSWORD,
        "STATE_DIRECTORY": str(tmp_path / "state"),
    }
    code, log = _run_until_online(_config(tmp_path, demo_dir, base), env=env)
    assert code == 0, log
    assert PASSWORD not in log


def test_wrong_password_is_a_clear_error_not_a_retry_loop(
    password_broker: MosquittoBroker, demo_dir: Path, tmp_path: Path
) -> None:
    mqtt = {"url": f"mqtt://127.0.0.1:{password_broker.port}", "username": "pi", "password": "nope"}
    started = time.monotonic()
    code, log = _run_until_online(_config(tmp_path, demo_dir, mqtt))
    assert code == 1 and time.monotonic() - started < 20
    errors = [ln for ln in log.splitlines() if ln.startswith("sensorcast: error:")]
    assert len(errors) == 1 and "refused the connection" in errors[0], log
    assert "nope" not in log


def test_mqtt5_protocol(mosquitto: MosquittoBroker, demo_dir: Path, tmp_path: Path) -> None:
    mqtt = {"url": f"mqtt://127.0.0.1:{mosquitto.port}", "protocol": "5"}
    code, log = _run_until_online(_config(tmp_path, demo_dir, mqtt))
    assert code == 0, log


@pytest.mark.parametrize("given", ["SENSORCAST_MQTT_PASSWORD", "password_env", "both"])
def test_command_sources_never_see_the_broker_password(
    given: str, password_broker: MosquittoBroker, demo_dir: Path, tmp_path: Path
) -> None:
    """A real agent with a command source that writes its environment to a file and prints
    a reading only when the password is nowhere in it. The password is in the agent's
    environment by the name it was given under, and once more under another name ("both":
    SENSORCAST_MQTT_PASSWORD wins over mqtt.password_env, whose variable still stays out)."""
    seen = tmp_path / "command-env.json"
    script = (
        "import json, os, sys\n"
        f"open({str(seen)!r} + '.tmp', 'w').write(json.dumps(dict(os.environ)))\n"
        f"os.replace({str(seen)!r} + '.tmp', {str(seen)!r})\n"  # whole, even if killed
        f"if {PASSWORD!r} in json.dumps(dict(os.environ)): sys.exit('password in my env')\n"
        "print(json.dumps({'temperature': 21.5, 'humidity': 40}))\n"
    )
    mqtt = {"url": f"mqtt://127.0.0.1:{password_broker.port}", "username": "pi"}
    if given != "SENSORCAST_MQTT_PASSWORD":
        mqtt["password_env"] = "BROKER_PW"
    command = {"type": "command", "interval_s": 0.2, "command": [sys.executable, "-c", script]}
    config = agent_config(
        tmp_path,
        device="cmd",
        mqtt=mqtt,
        streams=[{"name": "room", "model": demo_dir / "room.tflite", "sources": [command]}],
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "STATE_DIRECTORY": str(tmp_path / "state"),
        "CREDENTIALS_DIRECTORY": str(tmp_path),  # stays: names a folder, holds no secret
        "SOME_COPY": PASSWORD,  # the same value under a name the agent cannot know
        "UNRELATED": "kept",
    }
    if given == "both":
        env |= {"SENSORCAST_MQTT_PASSWORD": PASSWORD, "BROKER_PW": "an-older-password"}
    else:
        env["BROKER_PW" if given == "password_env" else "SENSORCAST_MQTT_PASSWORD"] = PASSWORD
    with start_agent(config, stdin=subprocess.DEVNULL, env=env) as proc:
        try:
            deadline = time.monotonic() + 30
            while not seen.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # a few more runs, and their readings handed on
        finally:
            proc.send_signal(signal.SIGTERM)
            _, log = proc.communicate(timeout=30)
    assert proc.returncode == 0, log
    child = json.loads(seen.read_text())
    assert PASSWORD not in json.dumps(child), sorted(child)
    assert "an-older-password" not in json.dumps(child), sorted(child)
    assert "SENSORCAST_MQTT_PASSWORD" not in child and "BROKER_PW" not in child
    assert "SOME_COPY" not in child
    assert child["UNRELATED"] == "kept" and child["CREDENTIALS_DIRECTORY"] == str(tmp_path)
    assert "password in my env" not in log
    accepted = re.findall(r"(\d+) readings accepted", log)
    assert accepted and int(accepted[-1]) > 0, log[-2000:]
