"""Question 3: 100 streams sharing one model on the same tick, batched vs one call each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.agent.common import STREAMS
from bench.agent.context import Run
from bench.agent.drive import driver
from bench.harness.markdown import table, us
from bench.harness.timing import interleaved

__all__ = ["child_batch", "measure", "render", "results"]


def child_batch(spec: dict[str, Any]) -> dict[str, Any]:
    """``predict_batch`` of 100 windows vs 100 ``predict`` calls, per bundle in the spec."""
    drv = driver(spec)
    out: dict[str, Any] = {}
    for key, path in spec["bundles"].items():
        f = drv.forecaster(drv.read_bundle(Path(path)))
        out[key] = _batch_one(f, spec["n"], spec["rounds"])
    return out


def _batch_one(f: Any, n: int, rounds: int) -> dict[str, Any]:
    m = f.bundle.manifest
    rng = np.random.default_rng(3)
    windows = [
        rng.standard_normal((m.window, len(m.features))).astype(np.float32) for _ in range(STREAMS)
    ]

    def per_stream() -> None:
        for w in windows:
            f.predict(w).copy()

    f.predict_batch(windows)  # sets up the batch interpreter
    timed = interleaved(
        {"single": (per_stream, n, None), "batched": (lambda: f.predict_batch(windows), n, None)},
        rounds,
    )
    single = np.stack([f.predict(w).copy() for w in windows])
    err = float(np.abs(f.predict_batch(windows) - single).max())
    return {
        "model": f.bundle.label,
        "batch": m.batch,
        "per_stream_us": timed["single"],
        "batched_us": timed["batched"],
        "max_abs_diff": err,
        "speedup": timed["single"]["us"] / timed["batched"]["us"],
    }


def measure(run: Run) -> None:
    """The after tree on the two ``--batch 100`` bundles."""
    bundles = {k: run.prep[k] for k in ("demo_batch", "lstm_batch") if run.prep.get(k)}
    spec = {
        **run.after.spec(),
        "bundles": bundles,
        "n": 5 if run.quick else 20,
        "rounds": run.rounds,
    }
    run.r["batch"] = run.child("batch", spec) or {}


def results(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per model (the child's ``seconds`` left out)."""
    return [d for d in (r.get("batch") or {}).values() if isinstance(d, dict)]


def render(r: dict[str, Any]) -> list[str]:
    """Section 3."""
    rows = [
        [
            d["model"],
            us(d["per_stream_us"]),
            us(d["batched_us"]),
            f"**{d['speedup']:.1f}x**",
            f"{d['max_abs_diff']:.1e}",
        ]
        for d in results(r)
    ]
    return [
        f"## 3. {STREAMS} streams sharing one model, same tick: batched vs per-stream",
        "",
        f"`Forecaster.predict_batch` of {STREAMS} windows on a bundle converted with "
        f"`--batch {STREAMS}` (float32) vs {STREAMS} `Forecaster.predict` calls; µs for all "
        f"{STREAMS} forecasts. Target: >= 5x.",
        "",
        *table(["model", "per stream", "batched", "speed-up", "max abs diff"], rows),
        "",
    ]
