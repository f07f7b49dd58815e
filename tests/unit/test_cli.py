"""User mistakes: one clear line naming the problem, a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import run_cli


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    stderr = result.stderr
    assert result.returncode != 0
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("sensorcast: error:")]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def config(tmp_path: Path, model: Path, extra: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        f'[device]\nid = "t"\n[mqtt]\nurl = "mqtt://127.0.0.1:1"\n'
        f'[[streams]]\nname = "room"\nmodel = "{model}"\ninput_topic = "x"\n{extra}'
    )
    return path


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("sensorcast 0.")


def test_check_accepts_the_demo_config(demo_dir: Path, tmp_path: Path) -> None:
    result = run_cli("check", "--config", str(config(tmp_path, demo_dir / "room.tflite")))
    assert result.returncode == 0, result.stderr
    assert "stream room: room@" in result.stdout and "runtime: litert" in result.stdout


def test_missing_config(tmp_path: Path) -> None:
    one_line_error(run_cli("check", "--config", str(tmp_path / "none.toml")), "file not found")


def test_missing_model(tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(config(tmp_path, tmp_path / "gone.tflite")))
    one_line_error(result, "streams[0].model", "file not found")
    assert result.returncode == 2


def test_file_that_is_not_a_model(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_text("hello")
    one_line_error(run_cli("check", "--config", str(config(tmp_path, junk))), "not a TFLite model")


def test_model_whose_features_do_not_match_the_stream(demo_dir: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, demo_dir / "room.tflite", 'features = ["temperature", "pressure"]\n')
    one_line_error(run_cli("check", "--config", str(cfg)), "stream room", "temperature, humidity")


def test_unreachable_broker_stops_run(demo_dir: Path, tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(config(tmp_path, demo_dir / "room.tflite")))
    one_line_error(result, "cannot reach MQTT broker 127.0.0.1:1")
    assert result.returncode == 1


def test_info_prints_the_manifest_as_json(demo_dir: Path) -> None:
    import json

    result = run_cli("info", str(demo_dir / "room.tflite"), "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["window"] == 24 and data["features"] == ["temperature", "humidity"]
    assert data["accuracy"]["windows"] > 0
