"""User mistakes: one clear line naming the problem, a non-zero exit, no traceback."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

from tests.support.agents import run_cli
from tests.support.configs import agent_config, stdin_stream, topic_stream


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    stderr = result.stderr
    assert result.returncode != 0
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("sensorcast: error:")]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def config(tmp_path: Path, model: Path, **stream_keys: Any) -> Path:
    """One stream ``room`` of ``model`` on topic ``x``, with more ``stream_keys`` if given."""
    return streams_config(tmp_path, [topic_stream(model, "x", **stream_keys)])


def streams_config(tmp_path: Path, streams: list[dict[str, Any]], **tables: Any) -> Path:
    """Device ``t``, a broker nobody listens on (port 1), ``streams`` and other ``tables``."""
    return agent_config(tmp_path, device="t", port=1, streams=streams, name="c.toml", **tables)


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
    one_line_error(run_cli("check", "--config", str(config(tmp_path, junk))), "TFLite model")


def test_model_whose_features_do_not_match_the_stream(demo_dir: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, demo_dir / "room.tflite", features=["temperature", "pressure"])
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


def test_non_finite_float_keys_fail_check_and_run_with_one_line(
    demo_dir: Path, tmp_path: Path
) -> None:
    model = demo_dir / "room.tflite"
    for command, extra, key in (
        ("run", {"max_gap_s": math.inf}, "streams[0].max_gap_s"),
        ("check", {"max_gap_s": math.inf}, "streams[0].max_gap_s"),
        ("check", {"max_future_s": math.nan}, "streams[0].max_future_s"),
    ):
        result = run_cli(command, "--config", str(config(tmp_path, model, **extra)))
        one_line_error(result, f"{key}: must be a finite number")
        assert result.returncode == 2


def test_deeply_nested_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 100_000)
    result = run_cli("check", "--config", str(path))
    one_line_error(result, "not valid TOML", "nested too deeply")
    assert "RecursionError" not in result.stderr


def test_a_ca_file_that_is_not_a_certificate_fails_check_and_run(
    demo_dir: Path, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("this is not a certificate\n")
    path = streams_config(
        tmp_path,
        [topic_stream(demo_dir / "room.tflite", "x")],
        mqtt={"url": "mqtts://127.0.0.1:1", "ca_file": ca},
    )
    for command in ("check", "run"):
        result = run_cli(command, "--config", str(path))
        one_line_error(result, f"mqtt.ca_file: {ca} holds no PEM certificate")


def test_a_device_or_a_directory_as_model_says_what_it_is(tmp_path: Path) -> None:
    result = run_cli("check", "--config", str(config(tmp_path, Path("/dev/zero"))))
    one_line_error(result, "streams[0].model: /dev/zero is not a regular file (character device)")
    result = run_cli("check", "--config", str(config(tmp_path, tmp_path)))
    one_line_error(result, f"streams[0].model: {tmp_path} is a directory")


def test_check_describes_each_streams_sources(demo_dir: Path, tmp_path: Path) -> None:
    model = demo_dir / "room.tflite"
    sensor = tmp_path / "temp1_input"
    sensor.write_text("21000\n")
    inputs = {
        "temperature": {"type": "file", "path": sensor, "interval_s": 5},
        "humidity": {"type": "mqtt_value", "topic": "sensors/hum"},
    }
    path = streams_config(
        tmp_path,
        [
            stdin_stream(model, name="pipe"),
            {"name": "mix", "model": model, "inputs": inputs},
            topic_stream(model, "sensors/room", name="topic"),
        ],
    )
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "None" not in result.stdout, result.stdout
    lines = {ln.split(":")[0].strip(): ln for ln in result.stdout.splitlines()}
    assert lines["stream pipe"].endswith("; input: stdin"), result.stdout
    assert lines["stream mix"].endswith(
        f"; inputs: temperature from file {sensor} every 5 s; "
        "humidity from mqtt_value topic sensors/hum"
    ), result.stdout
    assert lines["stream topic"].endswith("; input topic sensors/room"), result.stdout


def test_two_stdin_sources_fail_check(demo_dir: Path, tmp_path: Path) -> None:
    model = demo_dir / "room.tflite"
    stdin = {"type": "stdin"}
    path = streams_config(tmp_path, [{"name": "pipe", "model": model, "sources": [stdin, stdin]}])
    one_line_error(
        run_cli("check", "--config", str(path)), "streams[0].sources[1].type: only one stdin"
    )


def test_log_level_debug_prints_debug_lines(demo_dir: Path, tmp_path: Path) -> None:
    path = streams_config(
        tmp_path, [topic_stream(demo_dir / "room.tflite", "x")], log={"level": "debug"}
    )
    checked = run_cli("check", "--config", str(path))
    assert checked.returncode == 0, checked.stderr
    assert " DEBUG " in checked.stderr and "stream room: model" in checked.stderr
    ran = run_cli("run", "--config", str(path))  # the broker is unreachable: it stops
    debug = [ln for ln in ran.stderr.splitlines() if " DEBUG " in ln]
    assert any("stream room: mqtt source on topic x" in ln for ln in debug), ran.stderr
    # ... and at the default level, none.
    quiet = run_cli("check", "--config", str(config(tmp_path, demo_dir / "room.tflite")))
    assert quiet.returncode == 0 and " DEBUG " not in quiet.stderr
