"""``sensorcast bench``: runs on the demo bundle and reports every cell (structure, not speed);
given several bundles of one model, it compares their modes and names the fastest, consistent
with the figures it prints (no timing thresholds)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from tests.conftest import run_cli
from tests.support.paths import DATA_DIR, REPO

#: The demo model in two modes: dynamic range (as shipped) and float32.
DYNAMIC = REPO / "agent" / "demo" / "room.tflite"
FLOAT32 = DATA_DIR / "room_float32.tflite"


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
    assert "comparison" not in data  # one bundle: nothing to compare


def test_bench_prints_a_table(demo_dir: Path) -> None:
    result = run_cli("bench", str(demo_dir / "room.tflite"), "--threads", "1",
                     "--iterations", "5")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["model", "mode", "kernels", "thr"]
    assert sum(line.startswith("room@") for line in lines) == 2  # xnnpack and builtin
    assert not any(line.startswith(("modes compared", "fastest here")) for line in lines)


def test_bench_names_a_missing_model(tmp_path: Path) -> None:
    result = run_cli("bench", str(tmp_path / "nope.tflite"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "nope.tflite" in result.stderr


def _bench(*args: str) -> Any:
    result = run_cli("bench", *args, "--threads", "1", "--iterations", "20")
    assert result.returncode == 0, result.stderr
    return result


def test_bench_compares_modes_and_names_the_fastest(tmp_path: Path) -> None:
    data = json.loads(_bench(str(DYNAMIC), str(FLOAT32), "--json").stdout)
    c = data["comparison"]
    assert (c["kernels"], c["threads"]) == ("xnnpack", 1) and c["notes"] == []  # one model
    rows = {r["mode"]: r for r in c["rows"]}
    assert set(rows) == {"dynamic", "float32"}
    for mode, r in rows.items():
        assert r["error"] is None and r["path"] == str(DYNAMIC if mode == "dynamic" else FLOAT32)
        assert r["size_bytes"] == Path(r["path"]).stat().st_size
        assert r["forecast_ms"]["p50"] <= r["forecast_ms"]["p90"] and r["invoke_ms"]["p50"] > 0
        assert r["mae"] is not None and r["mae"] >= 0 and r["mae_of_std"] is not None
    # the cell compared is the one the rows print: xnnpack, 1 thread
    cell = {r["path"]: r for r in data["rows"] if r["kernels"] == "xnnpack"}
    for r in rows.values():
        assert r["forecast_ms"] == cell[r["path"]]["forecast_ms"]
    assert rows["float32"]["vs_float32"] == 1.0
    assert rows["dynamic"]["vs_float32"] == (
        rows["dynamic"]["forecast_ms"]["p50"] / rows["float32"]["forecast_ms"]["p50"]
    )
    best = min(rows.values(), key=lambda r: r["forecast_ms"]["p50"])
    assert [r["mode"] for r in rows.values() if r["fastest"]] == [best["mode"]]
    assert c["fastest"] == best["path"]
    assert c["recommendation"].startswith(f"fastest here: {best['mode']} (")
    assert f'set model = "{best["path"]}"' in c["recommendation"]


def _table(out: str) -> tuple[list[list[str]], str]:
    """The comparison's rows (split on whitespace, the mark ``*`` or ``-`` first) and its
    recommendation line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("modes compared"))
    assert lines[start + 1].split()[:6] == ["mode", "recurr.", "size", "KB", "fc", "p50"]
    rows = [
        ["*" if line.startswith("*") else "-", *line[1:].split()]
        for line in lines[start + 3 :]
        if line[:1] in ("*", " ")
    ]
    return rows, lines[-1]


def test_bench_on_a_directory_prints_the_fastest_consistently(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for name, src in (("room-dynamic.tflite", DYNAMIC), ("room-float32.tflite", FLOAT32)):
        shutil.copy(src, folder / name)
    (folder / "notes.txt").write_text("not a bundle")
    rows, advice = _table(_bench(str(folder)).stdout)
    assert [r[1] for r in rows] == ["dynamic", "float32"]  # the directory's bundles, sorted
    assert [r[-1] for r in rows] == [str(folder / "room-dynamic.tflite"),
                                     str(folder / "room-float32.tflite")]  # fmt: skip
    marked = [r for r in rows if r[0] == "*"]
    assert len(marked) == 1
    p50 = {r[1]: float(r[4]) for r in rows}  # mark, mode, recurrence, size, fc p50, ...
    assert p50[marked[0][1]] == min(p50.values())
    assert advice.startswith(f"fastest here: {marked[0][1]} (forecast p50 {marked[0][4]} ms")
    assert f'set model = "{marked[0][-1]}"' in advice
    assert re.search(r"\d+\.\d\dx as fast as (float32|dynamic)", advice)
    assert all(re.fullmatch(r"\d+\.\d\dx", r[7]) for r in rows)  # vs float32
    float32 = next(r for r in rows if r[1] == "float32")
    assert float32[7] == "1.00x" and float(float32[3]) == round(FLOAT32.stat().st_size / 1024, 1)


def test_bench_says_when_bundles_come_from_different_models(demo_dir: Path) -> None:
    weather = REPO / "examples" / "weather" / "weather.tflite"
    out = _bench(str(DYNAMIC), str(weather)).stdout
    assert "note: these bundles come from 2 different models" in out
    assert out.splitlines()[-1].startswith("fastest here: ")


def test_bench_names_an_empty_directory(tmp_path: Path) -> None:
    result = run_cli("bench", str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{tmp_path}: no .tflite bundles" in result.stderr
