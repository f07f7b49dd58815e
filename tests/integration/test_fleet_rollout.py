"""``sensorcast fleet rollout`` against real agents on a real Mosquitto: three devices fed
real-time readings, each with the Ed25519 public key whose private half signs the bundles.

One fleet, three rollouts in a row (each bundle newer than the last, so none is refused as a
downgrade): a good bundle goes out in waves 34,67,100 and is live everywhere; a worse one
stops at the first wave with the reason, its live model untouched and its shadow gone (and a
rerun reports the same and exits the same); a third one, with one device offline, survives
its controller being killed mid-soak: the same command resumes from the state file, finishes
with the others and reports the offline one (exit 3), and once that one is back, the same
command again rolls it out there too."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agents import AGENT, run_cli
from tests.support.brokers import MosquittoBroker
from tests.support.fleet import AgentFleet, ForecastLog
from tests.support.mqtt import Subscriber
from tests.support.updates import created, patch_manifest

#: [quality] min_samples = 10: after 10 + 12 (horizon) periods of 0.2 s, 4.4 s, the shadow has
#: its residuals on every step; the live model's error is taken over the same forecasts.
SOAK = "5s"


def _keys(directory: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )  # fmt: skip

    key = Ed25519PrivateKey.generate()
    private, public = directory / "update.pem", directory / "update.pub"
    private.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public.write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def _newer(bundle: bytes, years: int) -> bytes:
    """``bundle`` with its manifest ``created`` ``years`` later."""
    text = created(bundle)
    year = text[len('"created": "') :][:4]
    return patch_manifest(bundle, text, text.replace(year, str(int(year) + years), 1))


def _worse(bundle: bytes) -> bytes:
    """test_shadow's trick: the temperature's mean 50 degrees off, forecasts far off."""
    old = '"temperature": {"mean": 2'
    return patch_manifest(bundle, old, old[:-1] + "7")


def _label(data: bytes) -> str:
    return f"room@{hashlib.sha256(data).hexdigest()[:12]}"


def _rollout_args(
    bundle: Path, fleet: AgentFleet, key: Path, state: Path, *extra: str
) -> list[str]:
    return [
        "fleet", "rollout", str(bundle), "--stream", "room", "--soak", SOAK, "--key", str(key),
        "--state", str(state), "--timeout", "20s", "--offline-wait", "30s",
        "--url", f"mqtt://127.0.0.1:{fleet.port}", "--topic-prefix", fleet.prefix,
        # The same network as a shadow compares at exactly 1 (on the same actuals); the
        # worse one hundreds of times the live error.
        "--gate", "mae_ratio<=1.01", "--gate", "errors<=0", *extra,
    ]  # fmt: skip


def _shadow(fleet: AgentFleet, device: str) -> Path:
    return fleet.model(device).with_name("room.tflite.shadow")


def _live(fleet: AgentFleet) -> dict[str, bytes]:
    return {d: fleet.model(d).read_bytes() for d in fleet.devices}


def _forecast_model(log: ForecastLog, device: str) -> str:
    return (log.models().get(device) or ["?"])[-1]


@pytest.fixture
def fleet(
    mosquitto: MosquittoBroker, topic_prefix: str, fast_bundle: Path, tmp_path: Path
) -> Iterator[AgentFleet]:
    _private, public = _keys(tmp_path)
    with AgentFleet(
        tmp_path / "fleet", fast_bundle, port=mosquitto.port, prefix=topic_prefix, count=3,
        public_key=public, quality={"interval_s": 1, "min_samples": 10, "samples": 10},
    ) as agents:  # fmt: skip
        yield agents


def test_rollouts_in_waves_gated_on_each_devices_quality(
    fleet: AgentFleet, fast_bundle: Path, tmp_path: Path
) -> None:
    key = tmp_path / "update.pem"
    base = fast_bundle.read_bytes()
    good, bad, third = _newer(base, 1), _worse(_newer(base, 1)), _newer(base, 2)
    for name, data in (("good", good), ("bad", bad), ("third", third)):
        (tmp_path / f"{name}.tflite").write_bytes(data)
    log = fleet.forecast_log()
    try:
        # 1. A good bundle, in three waves of one device: live everywhere.
        state = tmp_path / "good.json"
        done = run_cli(*_rollout_args(tmp_path / "good.tflite", fleet, key, state,
                                      "--waves", "34,67,100", "--json"))  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["status"] == "done" and report["exit"] == 0
        assert [len(c) for c in report["cohorts"]] == [1, 1, 1]
        assert {r["step"] for r in report["devices"].values()} == {"promoted"}
        assert all(data == good for data in _live(fleet).values())
        assert not any(
            fleet.model(d).with_name("room.tflite.shadow").exists() for d in fleet.devices
        )
        # Wave by wave: each device was promoted before the next one got its shadow.
        order = [c[0] for c in report["cohorts"]]
        lines = done.stderr.splitlines()
        at = [next(i for i, x in enumerate(lines) if f"{d} (wave {w + 1}): promoted" in x)
              for w, d in enumerate(order)]  # fmt: skip
        sent = [next(i for i, x in enumerate(lines) if f"{d} (wave {w + 1}): shadow_sent" in x)
                for w, d in enumerate(order)]  # fmt: skip
        assert at[0] < sent[1] and at[1] < sent[2], done.stderr
        assert log.wait_for(
            lambda lg: all(_forecast_model(lg, d) == _label(good) for d in fleet.devices),
            20,
        ), log.models()
        mirror = Subscriber(fleet.port, f"{fleet.prefix}/fleet/rollout/{report['id']}")
        try:  # its progress, retained for dashboards, ends as the report does
            assert mirror.wait_for(lambda m: bool(m) and m[-1][2], 10)
            shown = json.loads(mirror.messages[-1][1])
        finally:
            mirror.close()
        assert shown["status"] == "done" and shown["sha256"] == hashlib.sha256(good).hexdigest()
        assert {d["step"] for d in shown["devices"].values()} == {"promoted"}

        # 2. A worse bundle: stopped at the first wave, with the reason; nothing else touched.
        state = tmp_path / "bad.json"
        stopped = run_cli(*_rollout_args(tmp_path / "bad.tflite", fleet, key, state,
                                         "--waves", "34,67,100"))  # fmt: skip
        assert stopped.returncode == 1, stopped.stderr
        first = json.loads(state.read_text())["cohorts"][0][0]
        row = next(x for x in stopped.stdout.splitlines() if x.startswith(first))
        assert " failed " in row and "mae_ratio" in row and "> 1.01" in row, stopped.stdout
        assert "shadow dropped" in row
        assert "stopped" in stopped.stdout.splitlines()[-1], stopped.stdout
        assert all(data == good for data in _live(fleet).values())  # live models stay
        assert not _shadow(fleet, first).exists()
        again = run_cli(*_rollout_args(tmp_path / "bad.tflite", fleet, key, state))
        assert again.returncode == 1 and again.stdout == stopped.stdout, again.stderr

        # 3. One device offline, the controller killed mid-soak: the same command resumes,
        # finishes with the others and reports the offline one (exit 3); once it is back,
        # the same command again rolls it out too.
        away = fleet.devices[0]
        fleet.stop(away)
        state = tmp_path / "third.json"
        args = _rollout_args(
            tmp_path / "third.tflite", fleet, key, state, "--waves", "100", "--offline-wait", "3s"
        )
        err = (tmp_path / "first-run.log").open("w")
        proc = subprocess.Popen([*AGENT, *args], stdout=subprocess.DEVNULL, stderr=err, text=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if _steps(state, but=away) == {"soaking"}:
                    break
                time.sleep(0.1)
            assert _steps(state, but=away) == {"soaking"}, (tmp_path / "first-run.log").read_text()
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
            err.close()
        resumed = run_cli(*args)
        assert resumed.returncode == 3, resumed.stderr
        assert "resumed from" in resumed.stderr
        row = next(x for x in resumed.stdout.splitlines() if x.startswith(away))
        assert " offline " in row and "offline for" in row, resumed.stdout
        assert f"offline, to resume: {away}" in resumed.stdout
        assert {d: data == third for d, data in _live(fleet).items()} == {
            d: d != away for d in fleet.devices
        }
        fleet.start(away)
        finished = run_cli(*args)
        assert finished.returncode == 0, finished.stderr
        assert all(data == third for data in _live(fleet).values())
        assert f"{away} (wave 1): promoted" in finished.stderr
        assert not any(f"{d} (wave 1)" in finished.stderr for d in fleet.devices if d != away)
        assert {d: g for d, g in log.gaps().items() if d != away} == {}  # no forecast lost
    finally:
        log.close()


def _steps(state: Path, but: str) -> set[str]:
    """The steps in the state file of every device but ``but``."""
    try:
        body = json.loads(state.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return set()
    return {rec["step"] for d, rec in body["devices"].items() if d != but}
