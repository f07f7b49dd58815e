"""`--norm` entries in both forms users have (mean/std, MinMaxScaler's min/max), each bad entry
one clear line, and `sensorcast norm` from a CSV's training rows (the rows `sensorcast train`
normalizes with). No TensorFlow and no scikit-learn here: tests/convert/test_norm.py checks the
translation against real fitted scalers and a real conversion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sensorcast.agent.cli import main as cli
from sensorcast.convert import ConvertError
from sensorcast.convert.dataset import load_series
from sensorcast.convert.norm import from_csv, main, read_norm


def _norm_file(tmp_path: Path, body: Any) -> Path:
    path = tmp_path / "norm.json"
    path.write_text(json.dumps(body))
    return path


def test_mean_std_entries_read_as_they_are(tmp_path: Path) -> None:
    path = _norm_file(tmp_path, {"t": {"mean": 20.5, "std": 2.0}, "h": {"mean": 50, "std": 9}})
    norm = read_norm(path, ["t", "h"])
    assert (norm["t"].mean, norm["t"].std, norm["h"].mean, norm["h"].std) == (20.5, 2.0, 50, 9)


@pytest.mark.parametrize(
    ("entry", "lo", "hi"),
    [
        ({"min": 10, "max": 90}, 0.0, 1.0),
        ({"min": 10, "max": 90, "feature_range": [0, 1]}, 0.0, 1.0),
        ({"min": -3.5, "max": 7.25, "feature_range": [-1, 1]}, -1.0, 1.0),
        ({"min": 1013.0, "max": 1030.0, "feature_range": [0.2, 0.8]}, 0.2, 0.8),
    ],
)
def test_min_max_becomes_the_same_affine_map(
    tmp_path: Path, entry: dict[str, Any], lo: float, hi: float
) -> None:
    """(x - mean) / std is MinMaxScaler's lo + (x - min) * (hi - lo) / (max - min)."""
    n = read_norm(_norm_file(tmp_path, {"x": entry}), ["x"])["x"]
    a, b = float(entry["min"]), float(entry["max"])
    x = np.linspace(a - (b - a), b + (b - a), 41)  # inside and beyond the training range
    scaled = lo + (x - a) * (hi - lo) / (b - a)
    np.testing.assert_allclose((x - n.mean) / n.std, scaled, rtol=0, atol=1e-12)
    assert (a - n.mean) / n.std == pytest.approx(lo, abs=1e-12)
    assert (b - n.mean) / n.std == pytest.approx(hi, abs=1e-12)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"min": 5, "max": 5}, "t: max 5 must be above min 5"),
        ({"min": 9, "max": 1}, "t: max 1 must be above min 9"),
        ({"min": 1}, "t needs numeric min and max"),
        ({"max": 1, "feature_range": [0, 1]}, "t needs numeric min and max"),
        ({"min": "low", "max": 1}, "t needs numeric min and max"),
        ({"min": float("nan"), "max": 1}, "t needs a finite min and max"),
        ({"min": 0, "max": float("inf")}, "t needs a finite min and max"),
        ({"mean": 1, "std": 2, "min": 0, "max": 3}, "t mixes mean/std with min/max; give one"),
        ({"mean": 1, "max": 3}, "t mixes mean with max; give one kind"),
        ({"mean": 1, "std": 2, "feature_range": [0, 1]}, "t mixes mean/std with feature_range"),
        ({"min": 0, "max": 1, "feature_range": [1, 0]}, "t: feature_range [1, 0] must be"),
        ({"min": 0, "max": 1, "feature_range": [0]}, "feature_range [0] must be [low, high]"),
        ({"min": 0, "max": 1, "feature_range": "0,1"}, "must be [low, high] with low < high"),
        ({"mean": 1}, "t needs numeric mean and std"),
        ({}, "t needs numeric mean and std"),
        ({"mean": 1, "std": 0}, "t needs a finite mean and a std > 0"),
        ({"mean": float("nan"), "std": 1}, "t needs a finite mean and a std > 0"),
        ({"mean": 1e13, "std": 1}, "t gives mean 1e+13, std 1: a bundle needs |mean| <= 1e+12"),
        ({"min": 0, "max": 1e-13}, "t gives mean 0, std 1e-13"),
    ],
)
def test_each_bad_entry_is_one_line_naming_the_column(
    tmp_path: Path, entry: dict[str, Any], says: str
) -> None:
    path = _norm_file(tmp_path, {"t": entry, "h": {"mean": 0, "std": 1}})
    with pytest.raises(ConvertError) as err:
        read_norm(path, ["h", "t"])
    message = str(err.value)
    assert message.startswith(f"norm {path}: t") and "\n" not in message
    assert says in message


def test_file_level_errors_keep_their_wording(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="file not found"):
        read_norm(tmp_path / "missing.json", ["t"])
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConvertError, match="not readable JSON"):
        read_norm(broken, ["t"])
    with pytest.raises(ConvertError, match=r'"min": a, "max": b'):
        read_norm(_norm_file(tmp_path, [1, 2]), ["t"])
    with pytest.raises(ConvertError, match="no entry for column 't'"):
        read_norm(_norm_file(tmp_path, {"h": {"mean": 0, "std": 1}}), ["t"])


def _csv(path: Path, rows: int) -> Path:
    """A sensor that warms up over the file (so the training rows differ from the whole)."""
    t = 1.7e9 + 60.0 * np.arange(rows)
    temp = 18 + np.linspace(0, 6, rows) + np.sin(np.arange(rows) / 5)
    hum = 60 - np.linspace(0, 10, rows) + np.cos(np.arange(rows) / 7)
    np.savetxt(path, np.c_[t, temp, hum], delimiter=",", header="ts,temp,hum", comments="",
               fmt="%.6f")  # fmt: skip
    return path


def test_csv_route_uses_exactly_the_rows_train_normalizes_with(tmp_path: Path) -> None:
    """90 rows: 0.7 * 90 is 62.99999999999999 in floats, train's split is row 63."""
    csv = _csv(tmp_path / "room.csv", 90)
    norm, rows = from_csv(csv, ["temp", "hum"])
    assert rows == 63
    train = load_series(csv, ["temp", "hum"], [], 1).norm()
    assert norm == train  # the same numbers, to the last bit
    whole = np.loadtxt(csv, delimiter=",", skiprows=1)
    assert norm["temp"].mean < whole[:, 1].mean() - 0.5  # not the whole file's


def test_csv_route_min_max_and_feature_range(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "room.csv", 100)
    norm, rows = from_csv(csv, ["temp"], "minmax", 0.5, (-1.0, 1.0))
    temp = np.loadtxt(csv, delimiter=",", skiprows=1)[:50, 1]
    assert rows == 50
    z = (temp - norm["temp"].mean) / norm["temp"].std
    assert z.min() == pytest.approx(-1, abs=1e-12) and z.max() == pytest.approx(1, abs=1e-12)


def test_norm_command_writes_what_convert_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the ``sensorcast`` command line, as users run it."""
    csv = _csv(tmp_path / "room.csv", 90)
    out = tmp_path / "out" / "norm.json"
    assert cli(["norm", str(csv), "--columns", "temp,hum", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} from standard, rows 0-62 of {csv}" in printed
    assert f"--norm {out}" in printed
    assert read_norm(out, ["temp", "hum"]) == load_series(csv, ["temp", "hum"], [], 1).norm()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--columns", "temp,wind"], "no column wind (it has temp, hum); check --columns"),
        (["--columns", "temp,temp"], "--columns 'temp,temp': give distinct"),
        (["--train-fraction", "1.5"], "--train-fraction 1.5: give a fraction in (0, 1]"),
        (["--kind", "minmax", "--feature-range", "1", "-1"], "--feature-range 1 -1: give LO HI"),
        (["--columns", "temp", "--columns", "hum"], "a CSV takes one --columns list"),
        (["--scaler", "x.pkl"], "give a CSV or --scaler FILE (one of them)"),
    ],
)
def test_norm_command_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    csv = _csv(tmp_path / "room.csv", 90)
    assert main([str(csv), *args, "-o", str(tmp_path / "n.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sensorcast norm: error: ") and err.count("\n") == 1
    assert says in err
    assert not (tmp_path / "n.json").exists()
