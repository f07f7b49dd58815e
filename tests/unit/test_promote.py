"""``sensorcast promote`` and the promotion code the agent's automatic promotion shares: the
shadow swapped in atomically with ``.previous`` kept, ``<model>.shadow`` consumed and a
configured ``shadow_model`` left alone, one clear line for each mistake; and when a shadow
has beaten the live model by the margin for long enough (data time), on real bundles and the
demo's real readings."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
from sensorcast.agent.config import QualityConfig, load_config
from sensorcast.agent.control.promote import promote
from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.agent.forecast.runtime import load_runtime
from sensorcast.agent.service import Service
from sensorcast.agent.shadow import Shadow, tracker_for
from sensorcast.agent.streams import load_model

from tests.support.agents import run_cli
from tests.support.configs import agent_config, topic_stream
from tests.support.updates import NEWER, created, patch_manifest

LIVE = NEWER.read_bytes()
#: The same model, made a minute later: another bundle (digest) that fits the stream.
CANDIDATE = patch_manifest(LIVE, created(LIVE), created(LIVE).replace("00:37:36", "00:38:36"))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _setup(tmp_path: Path, shadow: bytes | None = CANDIDATE, **keys: Any) -> Path:
    """``models/room.tflite`` (live) and ``models/room.tflite.shadow``; the config's path."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "room.tflite").write_bytes(LIVE)
    if shadow is not None:
        (models / "room.tflite.shadow").write_bytes(shadow)
    stream = topic_stream("models/room.tflite", "in", **keys)
    return agent_config(tmp_path, device="p", port=1, streams=[stream])


def _one_line(result: Any, code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("sensorcast: error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_promote_swaps_the_shadow_in_and_keeps_the_old_as_previous(tmp_path: Path) -> None:
    config = _setup(tmp_path)
    models = tmp_path / "models"
    result = run_cli("promote", "-c", str(config), "room")
    assert result.returncode == 0, result.stderr
    assert (models / "room.tflite").read_bytes() == CANDIDATE
    assert (models / "room.tflite.previous").read_bytes() == LIVE
    assert not (models / "room.tflite.shadow").exists()  # the default place: consumed
    assert f"room@{_sha(CANDIDATE)[:12]} is now live" in result.stdout, result.stdout
    assert f"room@{_sha(LIVE)[:12]} kept as room.tflite.previous" in result.stdout
    assert sorted(p.name for p in models.iterdir()) == [
        "room.tflite", "room.tflite.previous",
    ]  # fmt: skip  # no temporary file left behind
    # Nothing to promote now.
    _one_line(run_cli("promote", "-c", str(config), "room"), 1, "stream room", "no shadow model")


def test_a_configured_shadow_model_is_left_alone(tmp_path: Path) -> None:
    config = _setup(tmp_path, shadow=None, shadow_model="candidate.tflite")
    (tmp_path / "candidate.tflite").write_bytes(CANDIDATE)
    assert run_cli("promote", "-c", str(config), "room").returncode == 0
    assert (tmp_path / "candidate.tflite").read_bytes() == CANDIDATE  # still there
    assert (tmp_path / "models" / "room.tflite").read_bytes() == CANDIDATE
    # It now equals the live model: promoting it again is a mistake, said in one line.
    _one_line(run_cli("promote", "-c", str(config), "room"), 1, "already the live model")


def test_mistakes_get_one_line_and_change_nothing(tmp_path: Path) -> None:
    config = _setup(tmp_path, shadow=b"TFL3 not a model at all")
    models = tmp_path / "models"
    _one_line(run_cli("promote", "-c", str(config), "kitchen"), 2, "no stream 'kitchen'", "room")
    _one_line(run_cli("promote", "-c", str(config), "room"), 1, "stream room", "shadow")
    period = patch_manifest(LIVE, '"period_s": 300.0', '"period_s": 600.0')
    (models / "room.tflite.shadow").write_bytes(period)
    _one_line(run_cli("promote", "-c", str(config), "room"), 1, "does not fit", "period_s")
    assert (models / "room.tflite").read_bytes() == LIVE
    assert sorted(p.name for p in models.iterdir()) == ["room.tflite", "room.tflite.shadow"]


def test_promote_in_process_reports_what_it_did(tmp_path: Path) -> None:
    cfg = load_config(_setup(tmp_path))
    runtime = load_runtime()
    sc = cfg.streams[0]
    done = promote(sc, lambda c: load_model(c, runtime)[0], cfg.models.max_bytes)
    assert (done.stream, done.sha256, done.consumed) == ("room", _sha(CANDIDATE), True)
    assert done.previous == f"room@{_sha(LIVE)[:12]}"
    assert read_bundle(sc.model).sha256 == _sha(CANDIDATE)
    with pytest.raises(ModelError, match="no shadow model"):
        promote(sc, lambda c: load_model(c, runtime)[0], cfg.models.max_bytes)


def _worse(bundle: bytes) -> bytes:
    """The same model told the temperature's mean is 5 degrees higher: forecasts far off."""
    old = '"temperature": {"mean": 2'
    return patch_manifest(bundle, old, old[:-1] + "7")


def test_a_better_shadow_is_judged_on_data_time_and_margin(tmp_path: Path, demo_dir: Path) -> None:
    """Real forecasts of a real model (the shadow) and the same model made worse (live) on
    the demo's readings: the shadow's MAE is compared once both have ``min_samples`` per step,
    and wins only after ``after_s`` of data time below ``(1 - margin)`` x the live one's."""
    cfg = load_config(_setup(tmp_path, shadow=None))
    runtime = load_runtime()
    sc = replace(cfg.streams[0], model=tmp_path / "models" / "room.tflite")
    live_path = tmp_path / "live.tflite"
    live_path.write_bytes(_worse(LIVE))
    live_bundle, _, live_predict = load_model(replace(sc, model=live_path), runtime)
    bundle, _, predict = load_model(sc, runtime)
    q = QualityConfig(min_samples=10)
    live = tracker_for(q, sc, live_bundle.manifest)
    shadow = Shadow(sc, bundle, predict, tracker_for(q, sc, bundle.manifest), lambda: live, 10)
    assert live is not None and shadow.quality is not None
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:80, 1:]
    period = bundle.manifest.period_s
    verdicts = []
    for end in range(23, len(rows)):
        window = rows[end - 23 : end + 1]
        live.actual(end, window[-1])
        live.forecast(end, live_predict(window).copy(), False, window)
        shadow.step(end, window)
        verdicts.append((end, shadow.judge(0.5, 5 * period), shadow.maes()))
    assert shadow.forecasts == len(rows) - 23 and shadow.errors == 0
    # 10 residuals on every one of the 12 steps: step 12 of the forecasts at rows 23..32.
    first = next(end for end, _, maes in verdicts if maes is not None)
    assert first == 23 + 10 + 12 - 1, first
    _, _, maes = verdicts[-1]
    assert maes is not None and maes[0] < 0.5 * maes[1], maes
    promoted = [e for e, w, _ in verdicts if w]
    assert promoted and promoted[0] == first + 5, (first, promoted[:3])  # 5 periods later
    assert shadow.better_since == first * period
    # A margin it cannot beat: never.
    assert not shadow.judge(1 - 0.99 * maes[0] / maes[1], 0.0) and shadow.better_since is None, maes
    report = shadow.report()
    assert report["model"] == f"room@{_sha(LIVE)[:12]}" and report["forecasts"] == 57
    assert report["mae_ratio"] == pytest.approx(maes[0] / maes[1], abs=1e-4)
    assert report["errors"] == 0 and len(report["mae_by_step"]) == 12
    assert "skill" in report and "coverage" in report


def test_a_shadow_that_raises_is_counted_never_fatal(tmp_path: Path, demo_dir: Path) -> None:
    cfg = load_config(_setup(tmp_path, shadow=None))
    runtime = load_runtime()
    sc = cfg.streams[0]
    bundle, _, _ = load_model(sc, runtime)

    def broken(_window: np.ndarray) -> np.ndarray:
        raise RuntimeError("interpreter fell over")

    shadow = Shadow(sc, bundle, broken, tracker_for(cfg.quality, sc, bundle.manifest), lambda: None)
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:30, 1:]
    for end in range(23, 30):
        shadow.step(end, rows[end - 23 : end + 1])
    assert (shadow.errors, shadow.forecasts) == (7, 0)
    assert shadow.report()["mae_ratio"] is None


def test_the_agent_follows_the_shadow_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reloader's periodic check loads a shadow that appears, refuses one that does not fit
    or is the live model (one line each), reloads it when it changes, drops it when it goes."""
    caplog.set_level(logging.INFO, logger="sensorcast")
    service = Service(load_config(_setup(tmp_path, shadow=None)))
    service.open()  # the models and the pipeline, no network, no threads
    shadow = tmp_path / "models" / "room.tflite.shadow"
    stamp = [time.time_ns()]

    def put(data: bytes | None) -> Optional[str]:
        if data is None:
            shadow.unlink()
        else:
            shadow.write_bytes(data)
            stamp[0] += 1_000_000  # a new mtime, however coarse the file system's clock
            os.utime(shadow, ns=(stamp[0], stamp[0]))
        caplog.clear()
        service.reloader.reload(only_changed=True)
        running = service.streams[0].shadow
        return None if running is None else running.label

    try:
        assert service.streams[0].shadow is None
        assert put(CANDIDATE) == f"room@{_sha(CANDIDATE)[:12]}"
        assert "running beside" in caplog.text
        assert put(patch_manifest(LIVE, '"period_s": 300.0', '"period_s": 600.0')) is None
        (line,) = [r.getMessage() for r in caplog.records]
        assert "shadow model" in line and "not run" in line and "period_s" in line, line
        assert put(LIVE) is None and "is the live model: not run" in caplog.text
        assert put(CANDIDATE) is not None
        assert put(None) is None and "is gone" in caplog.text
    finally:
        service.close()
