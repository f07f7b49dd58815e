"""Shadow models with a real broker, agent and bundles on the demo's real readings: a shadow
runs beside the live model, is tracked on the same actuals and reported in the quality
message, never published as the stream's forecast; ``sensorcast promote`` swaps it in under
the running agent; ``auto_promote`` promotes a shadow that beats the live model by the margin
for ``promote_after_s`` of data time, and says so on ``model/state``."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from tests.support.agents import run_cli, start_agent
from tests.support.brokers import MosquittoBroker
from tests.support.bundles import json_lines
from tests.support.configs import agent_config, stdin_stream
from tests.support.mqtt import Subscriber
from tests.support.updates import patch_manifest

PERIOD = 0.2
START = 1_700_000_000


def _label(data: bytes) -> str:
    return f"room@{hashlib.sha256(data).hexdigest()[:12]}"


def _worse(bundle: bytes) -> bytes:
    """The same model told the temperature's mean is 50 degrees higher: forecasts far off
    (MAE in degrees, where the real model's is a tenth of one)."""
    old = '"temperature": {"mean": 2'
    return patch_manifest(bundle, old, old[:-1] + "7")


def _models(tmp_path: Path, live: bytes, shadow: bytes) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    (models / "room.tflite").write_bytes(live)
    (models / "room.tflite.shadow").write_bytes(shadow)
    return models


def _feed(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("".join(lines))
    proc.stdin.flush()


def _forecasts(sub: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(p) for p in sub.payloads("/forecast")]


def _final_quality(sub: Subscriber, forecasts: int) -> dict[str, Any]:
    """The quality message sent at shutdown: the one that counts ``forecasts``."""

    def reports() -> list[dict[str, Any]]:
        return [json.loads(p) for p in sub.payloads("/room/quality")]

    assert sub.wait_for(lambda _: any(r["forecasts"] == forecasts for r in reports()), 10)
    return reports()[-1]


def _stop(proc: subprocess.Popen[str], log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    text = log.read_text()
    assert proc.returncode == 0, text
    return text


@pytest.fixture
def rows(demo_dir: Path) -> np.ndarray:
    return np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:200, 1:]


def test_a_shadow_runs_beside_the_live_model_and_is_reported(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    calibrated_bundle: Path,
    rows: np.ndarray,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    """The same network in two bundles: the shadow's errors, step by step, are the live
    model's, on the same actuals (ratio 1), and nothing it forecasts is published."""
    live, shadow = fast_bundle.read_bytes(), calibrated_bundle.read_bytes()
    _models(tmp_path, live, shadow)
    config = agent_config(
        tmp_path, device="sh", port=mosquitto.port, prefix=topic_prefix,
        homeassistant={"enabled": False}, streams=[stdin_stream("models/room.tflite")],
    )  # fmt: skip
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/sh/#")
    log = tmp_path / "agent.log"
    with log.open("w") as err, start_agent(config, stderr=err) as proc:
        try:
            _feed(proc, json_lines(rows[:60], START, PERIOD))
            assert sub.wait_for(lambda _: len(_forecasts(sub)) >= 60 - 23, 30)
        finally:
            text = _stop(proc, log)
    assert f"shadow model {_label(shadow)} running beside {_label(live)}" in text, text
    assert {f["model"] for f in _forecasts(sub)} == {_label(live)}  # never the shadow's
    report = _final_quality(sub, len(_forecasts(sub)))
    assert report["model"] == _label(live)
    got = report["shadow"]
    assert got is not None, report
    assert got["model"] == _label(shadow) and got["errors"] == 0
    assert got["forecasts"] == report["forecasts"] >= 60 - 23
    assert got["samples_by_step"] == report["samples_by_step"]
    np.testing.assert_allclose(
        np.array(got["mae_by_step"], dtype=float), np.array(report["mae_by_step"], dtype=float),
        rtol=0.05,
    )  # fmt: skip
    assert got["mae_ratio"] == pytest.approx(1.0, abs=0.05)
    assert got["mae"] == pytest.approx(got["live_mae"], rel=0.05)
    for key in ("coverage", "skill", "level", "ratio"):
        assert key in got, got


def test_promote_swaps_the_shadow_in_under_the_running_agent(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    rows: np.ndarray,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    good = fast_bundle.read_bytes()
    bad = _worse(good)
    models = _models(tmp_path, bad, good)
    config = agent_config(
        tmp_path, device="pr", port=mosquitto.port, prefix=topic_prefix,
        homeassistant={"enabled": False}, streams=[stdin_stream("models/room.tflite")],
    )  # fmt: skip
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/pr/#")
    lines = json_lines(rows[:150], START, PERIOD)
    log = tmp_path / "agent.log"
    with log.open("w") as err, start_agent(config, stderr=err) as proc:
        try:
            _feed(proc, lines[:30])
            assert sub.wait_for(lambda _: len(_forecasts(sub)) >= 30 - 23, 30)
            done = run_cli("promote", "-c", str(config), "room")
            assert done.returncode == 0, done.stderr
            assert f"{_label(good)} is now live" in done.stdout
            # The agent's file check (every 2 s) swaps it in: readings at their real pace.
            deadline = time.monotonic() + 20
            for line in lines[30:]:
                _feed(proc, [line])
                if _forecasts(sub)[-1]["model"] == _label(good) or time.monotonic() > deadline:
                    break
                time.sleep(PERIOD / 2)
            assert sub.wait_for(lambda _: _forecasts(sub)[-1]["model"] == _label(good), 10)
        finally:
            text = _stop(proc, log)
    assert (models / "room.tflite").read_bytes() == good
    assert (models / "room.tflite.previous").read_bytes() == bad
    assert not (models / "room.tflite.shadow").exists()
    assert f"model reloaded: now {_label(good)}" in text, text
    labels = [f["model"] for f in _forecasts(sub)]
    swap = labels.index(_label(good))
    assert set(labels[:swap]) == {_label(bad)} and set(labels[swap:]) == {_label(good)}
    seqs = [f["seq"] for f in _forecasts(sub)]
    assert seqs == sorted(seqs)  # one stream of forecasts across the swap
    report = _final_quality(sub, len(labels) - swap)  # the promoted model's own tracker
    assert report["model"] == _label(good) and report["shadow"] is None  # consumed


def test_auto_promote_promotes_a_shadow_that_stays_better(
    mosquitto: MosquittoBroker,
    topic_prefix: str,
    fast_bundle: Path,
    rows: np.ndarray,
    tmp_path: Path,
    subscriber_factory: Callable[[int, str], Subscriber],
) -> None:
    """Live: the real model told a wrong mean (error of degrees); shadow: the real model. Once
    both have 20 residuals per step, the shadow stays 20 % better for 3 s of data time (15
    periods): the agent promotes it, reports it on model/state, and forecasts with it."""
    good = fast_bundle.read_bytes()
    bad = _worse(good)
    models = _models(tmp_path, bad, good)
    stream = stdin_stream(
        "models/room.tflite", auto_promote=True, promote_margin=0.2, promote_after_s=3.0
    )
    config = agent_config(
        tmp_path, device="ap", port=mosquitto.port, prefix=topic_prefix,
        homeassistant={"enabled": False}, quality={"min_samples": 20}, streams=[stream],
    )  # fmt: skip
    sub = subscriber_factory(mosquitto.port, f"{topic_prefix}/ap/#")
    lines = json_lines(rows, START, PERIOD)
    log = tmp_path / "agent.log"

    def promoted(_: object) -> bool:
        return any(json.loads(p)["status"] == "promoted" for p in sub.payloads("/model/state"))

    with log.open("w") as err, start_agent(config, stderr=err) as proc:
        try:
            _feed(proc, lines[:50])  # not yet 20 residuals on step 12: nothing to judge
            assert sub.wait_for(lambda _: len(_forecasts(sub)) >= 50 - 23, 30)
            time.sleep(2.5)  # a file check passes: no promotion on too few samples
            assert not promoted(None)
            rest = iter(lines[50:])
            for line in rest:  # then data time goes on, 2 periods per period
                _feed(proc, [line])
                if promoted(None):
                    break
                time.sleep(PERIOD / 2)
            assert sub.wait_for(promoted, 5), sub.payloads("/model/state")
            n = len(_forecasts(sub))
            for line in rest:  # the next reading's forecast comes from the promoted model
                _feed(proc, [line])
                if _forecasts(sub)[-1]["model"] == _label(good):
                    break
                time.sleep(PERIOD / 2)
            assert sub.wait_for(lambda _: _forecasts(sub)[-1]["model"] == _label(good), 10)
        finally:
            text = _stop(proc, log)
    (state,) = [json.loads(p) for p in sub.payloads("/model/state")]
    assert state["stream"] == "room" and state["auto"] is True
    assert state["model"] == _label(good) and state["previous"] == _label(bad)
    assert state["sha256"] == hashlib.sha256(good).hexdigest()
    assert "stayed below (1 - 0.2)" in state["reason"] and "for 3 s" in state["reason"]
    assert "promoted automatically" in text, text
    assert (models / "room.tflite").read_bytes() == good
    assert (models / "room.tflite.previous").read_bytes() == bad
    assert not (models / "room.tflite.shadow").exists()
    # It waited for the samples and then 3 s of data time: forecasts from at least row 23 + 20
    # + 11 (20 residuals per step) and 15 periods more came from the live model.
    labels = [f["model"] for f in _forecasts(sub)]
    assert labels.index(_label(good)) >= 20 + 11 + 15 and n <= len(labels)
