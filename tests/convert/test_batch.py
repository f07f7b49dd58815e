"""Bundles with a batch signature, and the agent batching streams that share one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sensorcast.agent.config import load_config
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import read_bundle
from sensorcast.agent.service import Service
from sensorcast.agent.sources import Reading

from tests.support.bundles import convert_demo
from tests.support.configs import agent_config, topic_stream


@pytest.fixture(scope="module")
def batched(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("batch") / "room-b4.tflite"
    assert convert_demo(out, "--batch", "4", "--period", "300") == 0
    return out


def test_batch_signature_gives_the_single_forecasts(batched: Path, demo_dir: Path) -> None:
    bundle = read_bundle(batched)
    assert bundle.manifest.batch == 4
    golden = np.load(demo_dir / "golden.npz")
    windows = [w.astype(np.float32) for w in golden["windows"][:9]]  # two chunks + a padded one
    f = Forecaster(bundle)
    single = np.stack([f.predict(w).copy() for w in windows])
    np.testing.assert_allclose(f.predict_batch(windows), single, atol=1e-5)
    np.testing.assert_allclose(single, golden["forecast"][:9], atol=1e-4)  # and Keras agrees


def test_int8_with_batch_is_refused_clearly(
    demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = convert_demo(tmp_path / "x.tflite", "--quantize", "int8", "--batch", "4",
                        "--period", "300")  # fmt: skip
    assert code == 1
    assert "--batch works with float32, float16 and dynamic" in capsys.readouterr().err


class Capture:
    """Stands in for the MQTT publisher only: the grouping is what is tested here."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, np.ndarray]] = []

    def publish(
        self,
        model: str,
        window_end: float,
        values: np.ndarray,
        out_of_range: bool = False,
        **trust: Any,  # fallback, level, band: not what is tested here
    ) -> int:
        self.sent.append((window_end, values.copy()))
        return len(self.sent)

    def publish_anomaly(self, model: str, anomaly: dict[str, Any]) -> int:
        return 0


def test_streams_sharing_a_batched_model_forecast_in_one_call(
    batched: Path, demo_dir: Path, tmp_path: Path
) -> None:
    config = agent_config(
        tmp_path,
        port=1,
        state={"dir": tmp_path / "state"},
        streams=[topic_stream(batched, f"in/{i}", name=f"s{i}") for i in range(6)],
        name="c.toml",
    )
    service = Service(load_config(config, env={}))
    service.open()  # models, outbox, pipeline: no broker
    captures = [Capture() for _ in service.streams]
    for stream, capture in zip(service.streams, captures):
        stream.publisher = capture  # type: ignore[assignment]
    rows = np.loadtxt(demo_dir / "room.csv", delimiter=",", skiprows=1)[:30]
    now = 2e9
    for ts, t, h in rows:
        for i in range(6):  # each stream sees the room shifted by i degrees
            service.pipeline.ingest([Reading(i, 0, ts, t + i), Reading(i, 1, ts, h)], now)
        service.pipeline.tick(now)
        service.pipeline.forecast_due()
    service.close()
    counters = service.counters()
    assert all(c["forecasts"] == 7 for c in counters.values())
    assert all(c["batched"] == 7 for c in counters.values())  # 6 due streams, chunks of 4
    single = Forecaster(read_bundle(batched))
    for i, capture in enumerate(captures):
        for window_end, values in capture.sent:
            end = int(np.flatnonzero(rows[:, 0] == window_end)[0])
            window = rows[end - 23 : end + 1, 1:].astype(np.float32) + np.float32([i, 0])
            np.testing.assert_allclose(values, single.predict(window), atol=1e-4)


def test_sources_shed_load_when_the_loop_is_behind(batched: Path, tmp_path: Path) -> None:
    from sensorcast.agent.sources.inbox import MAX_QUEUED

    config = agent_config(
        tmp_path,
        port=1,
        state={"dir": tmp_path / "state"},
        streams=[topic_stream(batched, "in", name="s")],
        name="c.toml",
    )
    service = Service(load_config(config, env={}))
    service.open()
    batch = [Reading(0, 0, 1.0, 1.0)]
    for _ in range(MAX_QUEUED + 25):
        service.inbox.hand_over(batch)
    service.close()
    assert service.inbox.shed == 25  # memory stays bounded; what was dropped is counted
