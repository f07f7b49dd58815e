"""The shipped bundle: manifest read without TensorFlow, golden forecasts, damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ModelError
from agent.forecast import Forecaster
from agent.manifest import Manifest, read_bundle, read_manifest_bytes


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
    from convert.bundle import embed_manifest  # writing a manifest is the converter's job

    b = read_bundle(demo_dir / "room.tflite")
    lying = Manifest(**{**b.manifest.__dict__, "window": 48})
    path = tmp_path / "lying.tflite"
    path.write_bytes(embed_manifest(b.model, lying))
    with pytest.raises(ModelError, match="input tensor shape"):
        Forecaster(read_bundle(path))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"window": 0}, "positive"),
        ({"features": []}, "features"),
        ({"quantization": "int4"}, "quantization"),
        ({"format": 99}, "format"),
        ({"normalization": {"temperature": {"mean": 1, "std": 0}}}, "std"),
    ],
)
def test_invalid_manifests_name_the_field(
    demo_dir: Path, change: dict[str, object], message: str
) -> None:
    data = json.loads(read_bundle(demo_dir / "room.tflite").manifest.to_json())
    data.update(change)
    with pytest.raises(ModelError, match=message):
        Manifest.from_json(json.dumps(data))
