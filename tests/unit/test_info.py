"""``sensorcast info`` and ``check`` show every manifest field a bundle has, readably."""

from __future__ import annotations

from pathlib import Path

from tests.support.agents import run_cli
from tests.support.configs import agent_config, topic_stream
from tests.support.manifest_fields import trust_manifest
from tests.support.manifests import bundle_bytes
from tests.support.paths import DATA_DIR


def info_lines(path: Path) -> dict[str, str]:
    """``sensorcast info PATH``'s lines by label (indented lines by their first word)."""
    result = run_cli("info", str(path))
    assert result.returncode == 0, result.stderr
    lines: dict[str, str] = {}
    for line in result.stdout.splitlines():
        label, _, value = line.strip().partition(":")
        lines.setdefault(label, value.strip())
    return lines


def test_info_shows_every_new_manifest_field(tmp_path: Path) -> None:
    path = tmp_path / "trust.tflite"
    path.write_bytes(bundle_bytes(trust_manifest()))
    lines = info_lines(path)
    assert lines["features"] == "temperature, Day sin"
    assert lines["computed"].startswith("Day sin <- day_sin ")
    assert "no input" in lines["computed"]
    assert lines["verified on"].startswith("temperature 14.25 .. 27.5 ")
    assert "out_of_range" in lines["verified on"]
    assert "max abs 0.0171 over every window" in lines["accuracy"]
    assert lines["out of range"].startswith("MAE 0.0312, max abs 0.0943")
    assert lines["temperature"].startswith("MAE 0.00204, max abs 0.0118 (0.0171 over every")
    assert "beyond the data MAE 0.0312, max 0.0943" in lines["temperature"]
    assert "(std 1.39)" in lines["temperature"]
    assert lines["Keras MAE"].startswith("0.1 ")
    assert lines["baselines"].startswith("MAE last value 0.2, seasonal (288 steps) 0.3")
    assert lines["skill"].startswith("23 % vs last value ")
    assert "LOSES" not in lines["skill"]
    assert lines["residuals"].startswith("80 % between -0.12 and +0.15 at the next step, ")
    assert lines["ops"] == (
        "70 (ADD 14, FULLY_CONNECTED 12, LOGISTIC 12, MUL 12, TANH 8, RESHAPE 7 and 2 more "
        "kinds); recurrence: loop (a TFLite WHILE loop over the time steps)"
    )
    assert lines["FORCED"].startswith("written with --force past the converter's sanity bound")


def test_info_says_loudly_when_a_bundle_loses_to_a_naive_forecast(tmp_path: Path) -> None:
    path = tmp_path / "loses.tflite"
    path.write_bytes(bundle_bytes(trust_manifest(skill=-0.5, forced=False)))
    lines = info_lines(path)
    assert lines["skill"].startswith("-50 % vs last value: LOSES to a naive forecast; ")
    assert "--norm" in lines["skill"]
    assert "FORCED" not in lines


def test_info_of_an_old_bundle_shows_no_new_field() -> None:
    lines = info_lines(DATA_DIR / "room_demo.tflite")  # the demo bundle before issue 15
    for label in ("computed", "verified on", "out of range", "skill", "ops", "FORCED"):
        assert label not in lines, label
    assert lines["features"] == "temperature, humidity"


def test_check_asks_no_input_for_computed_features(tmp_path: Path) -> None:
    model = tmp_path / "day.tflite"
    model.write_bytes(bundle_bytes(trust_manifest(forced=False)))
    path = agent_config(tmp_path, device="t", port=1, streams=[topic_stream(model, "room/in")])
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    stream = next(ln for ln in result.stdout.splitlines() if "stream room" in ln)
    assert stream.endswith("; input topic room/in; computed: Day sin <- day_sin"), stream


def test_norm_is_a_build_time_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "norm" in result.stdout
    result = run_cli("norm", "--help")
    assert result.returncode == 0, result.stderr
    assert "sensorcast norm" in result.stdout
