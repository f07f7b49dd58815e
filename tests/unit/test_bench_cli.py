"""``sensorcast bench``: runs on the demo bundle and reports every cell (structure, not speed)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def test_bench_reports_percentiles_per_kernel_and_thread_count(demo_dir: Path) -> None:
    result = run_cli(
        "bench", str(demo_dir / "room.tflite"), "--runtime", "litert",
        "--threads", "1,2", "--iterations", "20", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["runtime"]["name"] == "litert" and data["iterations"] == 20
    rows = data["rows"]
    assert {(r["kernels"], r["threads"]) for r in rows} == {
        ("xnnpack", 1), ("xnnpack", 2), ("builtin", 1), ("builtin", 2),
    }  # fmt: skip
    for row in rows:
        assert row["error"] is None
        assert row["model"].startswith("room@") and row["quantization"] == "dynamic"
        for key in ("invoke_ms", "forecast_ms"):
            cell = row[key]
            assert set(cell) == {"p50", "p90", "p99", "mean"}
            assert 0 < cell["p50"] <= cell["p90"] <= cell["p99"]
        assert row["batch_per_window_ms"] is None and row["rss_mb"] > 0


def test_bench_prints_a_table(demo_dir: Path) -> None:
    result = run_cli("bench", str(demo_dir / "room.tflite"), "--threads", "1",
                     "--iterations", "5")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["model", "mode", "kernels", "thr"]
    assert sum(line.startswith("room@") for line in lines) == 2  # xnnpack and builtin


def test_bench_names_a_missing_model(tmp_path: Path) -> None:
    result = run_cli("bench", str(tmp_path / "nope.tflite"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "nope.tflite" in result.stderr
