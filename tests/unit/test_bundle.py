"""The shipped bundle: manifest read without TensorFlow, golden forecasts, damaged files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.forecaster import Forecaster, plain_shape
from sensorcast.agent.forecast.manifest import Manifest, read_bundle, read_manifest_bytes

from tests.support.agents import run_cli
from tests.support.configs import agent_config, topic_stream
from tests.support.manifests import bundle_bytes, demo_manifest
from tests.support.paths import REPO


def test_manifest_describes_the_demo_model(demo_dir: Path) -> None:
    b = read_bundle(demo_dir / "room.tflite")
    m = b.manifest
    assert (m.window, m.horizon, m.period_s) == (24, 12, 300.0)
    assert m.features == ("temperature", "humidity")
    assert m.targets == ("temperature",)
    assert m.quantization in ("float32", "float16", "dynamic", "int8")
    assert m.selection.startswith(m.quantization)  # converted with --quantize auto
    assert set(m.normalization) == {"temperature", "humidity"}
    assert m.accuracy is not None and m.accuracy.mae < 0.02 * m.accuracy.target_std
    assert b.label.startswith("room@") and len(b.sha256) == 64
    assert m.versions["tensorflow"] and m.source_sha256


def test_forecaster_keeps_the_manifests_promise_on_keras_golden_outputs(demo_dir: Path) -> None:
    golden = np.load(demo_dir / "golden.npz")
    bundle = read_bundle(demo_dir / "room.tflite")
    assert bundle.manifest.accuracy is not None
    promised = bundle.manifest.accuracy
    f = Forecaster(bundle)
    errors = np.stack(
        [
            np.abs(f.predict(w.astype(np.float32)) - expected)
            for w, expected in zip(golden["windows"], golden["forecast"])
        ]
    )
    # Golden windows span all of room.csv; the promise was measured on its last 20 %.
    assert errors.max() <= 1.5 * promised.max_abs + 1e-5
    assert errors.mean() <= 1.5 * promised.mae + 1e-6


def test_manifest_round_trips_through_json(demo_dir: Path) -> None:
    m = read_bundle(demo_dir / "room.tflite").manifest
    assert Manifest.from_json(m.to_json()) == m


def test_truncated_bundle_is_a_model_error(demo_dir: Path, tmp_path: Path) -> None:
    data = (demo_dir / "room.tflite").read_bytes()
    for size in (0, 7, 100, len(data) // 2):
        bad = tmp_path / f"cut{size}.tflite"
        bad.write_bytes(data[:size])
        with pytest.raises(ModelError, match=str(bad)):
            read_bundle(bad)


def test_bit_flips_never_crash_the_reader(demo_dir: Path) -> None:
    data = bytearray((demo_dir / "room.tflite").read_bytes())
    rng = np.random.default_rng(1)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        flipped = bytearray(data)
        for pos in rng.integers(0, 64, 3):  # the header and root table: offsets that matter
            flipped[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            read_manifest_bytes(bytes(flipped))
            outcomes["ok"] += 1
        except ModelError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0  # damage is noticed, as a ModelError, never a crash


def test_manifest_with_lying_shapes_is_rejected_when_loaded(demo_dir: Path, tmp_path: Path) -> None:
    from sensorcast.convert.bundle import (
        embed_manifest,  # writing a manifest is the converter's job
    )

    b = read_bundle(demo_dir / "room.tflite")
    lying = Manifest(**{**b.manifest.__dict__, "window": 48})
    path = tmp_path / "lying.tflite"
    path.write_bytes(embed_manifest(b.model, lying))
    with pytest.raises(ModelError, match="input tensor shape") as caught:
        Forecaster(read_bundle(path))
    # Plain ints, not numpy's reprs ([np.int32(1), np.int32(24), np.int32(2)]).
    assert "shape (1, 24, 2) does not match the manifest's (1, 48, 2)" in str(caught.value)
    assert "np." not in str(caught.value)


def test_output_shape_error_prints_plain_ints(tmp_path: Path) -> None:
    data = demo_manifest()
    data["horizon"] = 6
    accuracy = data["accuracy"]
    for key in ("forecast_mae", "keras_forecast_mae"):
        if key in accuracy:
            accuracy[key] = accuracy[key][:6]
    for tables in (accuracy.get("baselines", {}), accuracy.get("residual_quantiles", {})):
        for name in tables:  # per-step tables, as long as the horizon
            tables[name] = tables[name][:6]
    path = tmp_path / "short.tflite"
    path.write_bytes(bundle_bytes(data))
    with pytest.raises(ModelError, match=r"output tensor shape \(1, 12\) does not hold") as caught:
        Forecaster(read_bundle(path))
    assert "np." not in str(caught.value)


def test_plain_shape_turns_numpy_dims_into_ints() -> None:
    dims = np.array([1, 24, 2], dtype=np.int32)
    assert plain_shape(dims) == (1, 24, 2)
    assert str(plain_shape(dims)) == "(1, 24, 2)"
    assert all(type(d) is int for d in plain_shape(dims))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"window": 0}, "window = 0 is out of range"),
        ({"features": []}, "features"),
        ({"quantization": "int4"}, "quantization"),
        ({"format": 99}, "format"),
        ({"format": 3}, r"format 3 is not supported by this agent \(knows 1, 2\)"),
        ({"normalization": {"temperature": {"mean": 1, "std": 0}}}, "std"),
        ({"verified_range": {"temperature": [30, 10]}}, r"verified_range.temperature = \[30, 10\]"),
        ({"verified_range": {"temperature": [0, float("nan")]}}, "verified_range.temperature"),
        ({"verified_range": {"pressure": [0, 1]}}, "'pressure' is not a feature"),
        ({"computed": {"humidity": "hour_sin"}}, "computed.humidity = 'hour_sin' is not one of"),
        ({"computed": {"Day sin": "day_sin"}}, "'Day sin' is not a feature"),
        ({"ops": {"WHILE": -1}}, r"ops.WHILE = -1 is out of range"),
        ({"ops": {"WHILE": "one"}}, "ops.WHILE = 'one' must be int"),
        ({"recurrence": "spiral"}, "recurrence = 'spiral' is not one of"),
    ],
)
def test_invalid_manifests_name_the_field(
    demo_dir: Path, change: dict[str, object], message: str
) -> None:
    data = json.loads(read_bundle(demo_dir / "room.tflite").manifest.to_json())
    data.update(change)
    with pytest.raises(ModelError, match=message):
        Manifest.from_json(json.dumps(data))


def _set(data: dict[str, Any], path: str, value: object) -> None:
    """``data["a"]["b"] = value`` for ``path`` ``"a.b"``."""
    *parents, last = path.split(".")
    for key in parents:
        data = data[key]
    data[last] = value


INT8 = {"dtype": "int8", "scale": 0.02, "zero_point": 0}

# (field path, hostile value, what the error must say): every number in a manifest.
OUT_OF_RANGE = [
    ("period_s", 1e-300, "period_s = 1e-300 is out of range (0.001 .. 31622400 s)"),
    ("period_s", 0, "period_s = 0.0 must be positive"),
    ("period_s", -300, "period_s = -300.0 must be positive"),
    ("period_s", 1e300, "period_s = 1e+300 is out of range"),
    ("period_s", math.nan, "period_s = nan must be finite"),
    ("period_s", math.inf, "period_s = inf must be finite"),
    ("period_s", 10**400, "period_s = 1000000000000000000000000000000000000..."),
    ("period_s", "300", "period_s = '300' must be float"),
    ("window", 10**9, "window = 1000000000 is out of range (1 .. 100000)"),
    ("window", 24.5, "window = 24.5 must be int"),
    ("window", True, "window = True must be int"),
    ("horizon", 0, "horizon = 0 is out of range"),
    ("horizon", 10**6, "horizon = 1000000 is out of range"),
    ("features", [f"f{i}" for i in range(1001)], "features has 1001 names, more than 1000"),
    ("normalization.temperature.mean", math.nan, "normalization.temperature.mean = nan"),
    ("normalization.temperature.mean", 1e300, "normalization.temperature.mean = 1e+300"),
    ("normalization.humidity.std", 1e-300, "normalization.humidity.std = 1e-300 is out of"),
    ("normalization.humidity.std", -1, "normalization.humidity.std = -1.0 must be > 0"),
    ("normalization.humidity.std", math.inf, "normalization.humidity.std = inf must be"),
    ("input", {**INT8, "scale": 0}, "input.scale = 0.0 is out of range"),
    ("input", {**INT8, "scale": math.nan}, "input.scale = nan must be finite"),
    ("input", {**INT8, "scale": 1e-300}, "input.scale = 1e-300 is out of range"),
    ("output", {**INT8, "scale": 1e300}, "output.scale = 1e+300 is out of range"),
    ("input", {**INT8, "zero_point": 300}, "input.zero_point = 300 is out of range (-128 .. 127)"),
    ("output", {**INT8, "zero_point": -129}, "output.zero_point = -129 is out of range"),
    ("output", {**INT8, "zero_point": "x"}, "output.zero_point = 'x' must be int"),
    ("input", {"dtype": "float32", "scale": math.inf}, "input.scale = inf must be finite"),
    ("input", {"dtype": "float32", "zero_point": 1e300}, "input.zero_point = 1e+300 must be"),
    ("accuracy.mae", -1, "accuracy.mae = -1.0 is out of range"),
    ("accuracy.max_abs", math.nan, "accuracy.max_abs = nan must be finite"),
    ("accuracy.windows", -1, "accuracy.windows = -1 is out of range"),
    ("accuracy.target_std", "x", "accuracy.target_std = 'x' must be float"),
    ("accuracy.target_std", math.inf, "accuracy.target_std = inf must be finite"),
    ("accuracy.target_std", -2, "accuracy.target_std = -2.0 is out of range"),
    ("accuracy.forecast_mae", [[10**400]] * 12, "forecast_mae: not a table of numbers"),
    ("accuracy.forecast_mae", [[math.nan]] * 12, "forecast_mae: nan is out of range"),
    ("latency_ms", math.nan, "latency_ms = nan must be finite"),
    ("latency_ms", -1, "latency_ms = -1.0 is out of range (0 .. 1e+30 ms)"),
    ("latency_ms", "fast", "latency_ms = 'fast' must be float"),
    ("batch", 0, "batch = 0 is out of range (1 .. 4096)"),
    ("batch", 10**9, "batch = 1000000000 is out of range"),
    ("batch", 1.5, "batch = 1.5 must be int"),
    ("format", True, "manifest format True is not supported"),
]


@pytest.mark.parametrize(
    ("path", "value", "message"), OUT_OF_RANGE, ids=[f"{p}={v!r:.12}" for p, v, _ in OUT_OF_RANGE]
)
def test_every_manifest_number_is_checked_and_named_with_its_value(
    path: str, value: object, message: str
) -> None:
    data = demo_manifest()
    _set(data, path, value)
    with pytest.raises(ModelError) as caught:
        Manifest.from_json(json.dumps(data, allow_nan=True))
    assert message in str(caught.value)


def test_a_period_of_1e_300_is_refused_wherever_a_bundle_is_read(tmp_path: Path) -> None:
    """It passed every check, was applied, and the next reading crashed the agent with
    OverflowError (the window's slot is ts / period_s)."""
    data = demo_manifest()
    data["period_s"] = 1e-300
    path = tmp_path / "tiny-period.tflite"
    path.write_bytes(bundle_bytes(data))
    with pytest.raises(ModelError, match=f"model {path}: manifest field period_s = 1e-300"):
        read_bundle(path)
    result = run_cli("info", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"sensorcast: error: model {path}: manifest field period_s = 1e-300 is out of range "
        "(0.001 .. 31622400 s)"
    ]
    config = agent_config(
        tmp_path, device="t", port=1, streams=[topic_stream(path, "x")], name="c.toml"
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "stream room: model" in result.stderr and "period_s = 1e-300" in result.stderr


def test_the_projects_own_bundles_and_periods_are_within_bounds() -> None:
    for path in (REPO / "examples/demo/room.tflite", REPO / "tests/data/room_float32.tflite"):
        assert read_bundle(path).manifest.period_s == 300.0
    data = demo_manifest()
    # The tests' fast bundles (0.2 s), and both ends of each bound, inclusive.
    for period in (0.2, 0.001, 366 * 86400):
        assert Manifest.from_json(json.dumps({**data, "period_s": period})).period_s == period
    edges = {"window": 100_000, "batch": 4096, "latency_ms": 0}
    m = Manifest.from_json(json.dumps({**data, **edges}))
    assert (m.window, m.batch, m.latency_ms) == (100_000, 4096, 0.0)
    old = {k: v for k, v in data.items() if k not in ("batch", "latency_ms", "accuracy")}
    m = Manifest.from_json(json.dumps({**old, "input": {"dtype": "float32"}, "warnings": 5}))
    assert (m.batch, m.latency_ms, m.input.scale, m.warnings) == (1, 0.0, 0.0, ())


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("accuracy.per_target", {"pressure": {"mae": 1}}, "per_target names 'pressure'"),
        ("accuracy.per_target", {"temperature": {"mae": -1}}, "per_target.temperature.mae"),
        ("accuracy.baselines", {"climatology": []}, "baselines.climatology: not one of"),
        ("accuracy.baselines", {"last_value": [[1.0]]}, "baselines.last_value: want 12 steps"),
        ("accuracy.skill", 2.0, "skill = 2.0 is out of range"),
        ("accuracy.season", -1, "season = -1 is out of range"),
        ("accuracy.residual_quantiles", {"1.5": [[0.1]] * 12}, "1.5: not a probability"),
        ("accuracy.residual_quantiles", {"p90": [[0.1]] * 12}, "p90: not a probability"),
        ("accuracy.residual_quantiles", {"0.9": [[0.1]] * 3}, "0.9: want 12 steps"),
        ("accuracy.residual_quantiles", {"0.1": [[-1e31]] * 12}, r"0.1: -1e\+31 is out of range"),
    ],
)
def test_the_accuracy_records_are_checked_too(
    demo_dir: Path, path: str, value: object, message: str
) -> None:
    data = json.loads(read_bundle(demo_dir / "room.tflite").manifest.to_json())
    _set(data, path, value)
    with pytest.raises(ModelError, match=message):
        Manifest.from_json(json.dumps(data))


def test_the_new_fields_round_trip_and_a_stateful_bundle_reads(demo_dir: Path) -> None:
    data = json.loads(read_bundle(demo_dir / "room.tflite").manifest.to_json())
    data.update(
        format=2,
        verified_range={"temperature": [10, 30.5]},
        computed={},
        ops={"WHILE": 1, "FULLY_CONNECTED": 3},
        recurrence="loop",
        forced=True,
    )
    data["accuracy"].update(
        skill=-0.5,
        season=288,
        baselines={"last_value": [[0.1]] * 12},
        residual_quantiles={"0.1": [[-0.2]] * 12, "0.9": [[0.3]] * 12},
    )
    manifest = Manifest.from_json(json.dumps(data))
    assert manifest.format == 2 and manifest.forced and manifest.recurrence == "loop"
    assert manifest.verified_range == {"temperature": (10.0, 30.5)}
    assert manifest.accuracy is not None and manifest.accuracy.skill == -0.5
    assert manifest.accuracy.residual_quantiles["0.1"][0] == (-0.2,)
    assert Manifest.from_json(manifest.to_json()) == manifest
