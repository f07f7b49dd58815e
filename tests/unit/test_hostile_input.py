"""Property-based tests (hypothesis) over every parser the agent exposes to the outside:
MQTT and stdin payloads, single numbers, w1_slave text, config files, model files. Each input
is either accepted or rejected with a reason; nothing else may escape."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Union

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from sensorcast.agent.config import parse_config
from sensorcast.agent.errors import ConfigError, ModelError
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import Manifest, read_bundle, read_manifest_bytes
from sensorcast.agent.forecast.runtime import load_runtime
from sensorcast.agent.sources.parse import parse_json_reading, parse_number, parse_w1_slave
from sensorcast.agent.window import Window

from tests.support.manifests import bundle_bytes, demo_manifest
from tests.support.paths import REPO

FEATURES = ((0, "temperature"), (1, "humidity"))
REASONS = {"not_json", "not_object", "bad_timestamp", "missing_feature", "bad_value"}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_a_reading(payload: bytes) -> None:
    readings, rejects = parse_json_reading(payload, 1e9, FEATURES, 0)
    assert set(rejects) <= REASONS
    assert all(isinstance(r.value, float) and isinstance(r.ts, float) for r in readings)


@given(
    st.dictionaries(
        st.sampled_from(["ts", "temperature", "humidity", "other"]), json_values, max_size=4
    )
)
def test_json_objects_as_readings(obj: dict[str, object]) -> None:
    payload = json.dumps(obj, allow_nan=True).encode()
    readings, rejects = parse_json_reading(payload, 1e9, FEATURES, 0)
    assert set(rejects) <= REASONS
    assert len(readings) + sum(r in ("missing_feature", "bad_value") for r in rejects) in (0, 2)
    window = Window(2, 3, 60.0)
    for r in readings:  # and whatever got through never breaks a window
        window.add(r.feature, r.ts, r.value, now=1e9)


@given(st.text(max_size=40) | st.binary(max_size=40).map(bytes))
def test_single_numbers(text: object) -> None:
    try:
        value = parse_number(text)  # type: ignore[arg-type]
    except ValueError as exc:
        assert str(exc) in ("empty", "not_number")
    else:
        assert isinstance(value, float)


@given(
    st.text(max_size=120)
    | st.builds(
        lambda crc, t: (
            f"72 01 4b 46 7f ff 0e 10 57 : crc=57 {crc}\n72 01 4b 46 7f ff 0e 10 57 t={t}\n"
        ),
        st.sampled_from(["YES", "NO", "", "yes"]),
        st.integers(-(10**7), 10**7).map(str) | st.text(max_size=6),
    )
)
def test_w1_slave_text(text: str) -> None:
    try:
        value = parse_w1_slave(text)
    except ValueError as exc:
        assert str(exc) in ("crc", "power_on_reset", "no_sensor", "not_w1_slave", "not_number")
    else:
        assert math.isfinite(value)


@given(
    st.dictionaries(
        st.sampled_from(["device", "mqtt", "streams", "log", "state", "outbox", "junk"]),
        json_values,
        max_size=5,
    )
)
def test_config_documents(data: dict[str, object]) -> None:
    try:
        parse_config(data, Path("/nonexistent/sensorcast.toml"), env={})
    except ConfigError as exc:
        assert str(exc).startswith("config ")


MODEL = (REPO / "examples" / "demo" / "room.tflite").read_bytes()


@given(
    st.integers(0, len(MODEL)),
    st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=6),
)
def test_damaged_model_files(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(MODEL[:cut])
    for pos, byte in flips:
        if pos < len(data):
            data[pos] = byte
    try:
        raw = read_manifest_bytes(bytes(data))
        if raw:
            m = Manifest.from_json(raw.decode("utf-8", errors="replace"))
            assert m.window >= 1 and m.features
    except ModelError:
        return  # rejected, with its reason


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "window",
                "features",
                "targets",
                "horizon",
                "period_s",
                "quantization",
                "normalization",
                "format",
                "input",
                "output",
                "accuracy",
                "batch",
                "latency_ms",
                "warnings",
            ]
        ),
        json_values,
        max_size=14,
    )
)
def test_lying_manifests(fields: dict[str, object]) -> None:
    try:
        m = Manifest.from_json(json.dumps(fields, allow_nan=True))
    except ModelError:
        return  # rejected, with its reason
    assert m.window >= 1 and m.horizon >= 1 and m.period_s > 0 and m.features and m.targets


# Every number a manifest holds, by its path in the JSON object.
JsonPath = tuple[Union[str, int], ...]
MANIFEST_NUMBERS: list[JsonPath] = [
    ("period_s",),
    ("window",),
    ("horizon",),
    ("batch",),
    ("latency_ms",),
    ("format",),
    ("normalization", "temperature", "mean"),
    ("normalization", "temperature", "std"),
    ("normalization", "humidity", "mean"),
    ("normalization", "humidity", "std"),
    ("input", "scale"),
    ("input", "zero_point"),
    ("output", "scale"),
    ("output", "zero_point"),
    ("accuracy", "mae"),
    ("accuracy", "max_abs"),
    ("accuracy", "windows"),
    ("accuracy", "target_std"),
    ("accuracy", "forecast_mae", 0, 0),
    ("accuracy", "forecast_mae", 11, 0),
]
EDGES = [math.nan, math.inf, -math.inf, 1e-300, -1e-300, 1e300, -1e300, 0, 0.0, -0.0, -1, 1]
EDGES += [2, 12, 24, 10**30, -(10**30), 2**63, 10**400, 1e-3, 0.2, 366 * 86400.0, 1e12, 1e-12]
hostile_numbers = st.one_of(
    st.sampled_from(EDGES),
    st.integers(),
    st.floats(),
    st.none() | st.booleans() | st.text(max_size=3),
    # Plausible values too, so that many bundles load and forecast with odd but legal numbers.
    st.floats(1e-3, 1e4),
    st.integers(0, 127),
)
GOLDEN = np.load(REPO / "examples" / "demo" / "golden.npz")["windows"][0]
RUNTIME = load_runtime()


def _set(data: Any, path: JsonPath, value: object) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


@pytest.fixture(scope="module")
def hostile_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile") / "hostile.tflite"


@given(st.dictionaries(st.sampled_from(MANIFEST_NUMBERS), hostile_numbers, min_size=1, max_size=3))
def test_manifest_numbers_through_the_whole_load_path(
    hostile_bundle: Path, changes: dict[JsonPath, object]
) -> None:
    """A real bundle file whose manifest numbers are hostile goes the way the agent takes it
    (read_bundle, Forecaster, its Window, readings, one forecast): a ModelError, or finite
    forecasts; never another exception (period_s = 1e-300 ended in OverflowError)."""
    data = demo_manifest()
    for path, value in changes.items():
        _set(data, path, value)
    hostile_bundle.write_bytes(bundle_bytes(data))
    stage = "reader"
    try:
        bundle = read_bundle(hostile_bundle)
        stage = "forecaster"
        forecaster = Forecaster(bundle, RUNTIME)
        m = bundle.manifest
        window = Window(len(m.features), m.window, m.period_s)
        first = math.floor(1.7e9 / m.period_s)
        for k in range(m.window + 1):  # the last slot's reading closes the one before
            ts = (first + k + 0.5) * m.period_s
            for feature, value in enumerate(GOLDEN[min(k, len(GOLDEN) - 1)]):
                assert window.add(feature, ts, float(value), now=ts) >= 0
        assert window.ready
        y = forecaster.predict(window.view())
        if forecaster.batch_size > 1:
            forecaster.predict_batch([window.view()])  # the demo has no batch signature
    except ModelError:
        event(f"refused by the {stage}")
        return  # refused, with its reason
    event("forecast made")
    assert y.shape == (m.horizon, len(m.targets)) and np.isfinite(y).all()
