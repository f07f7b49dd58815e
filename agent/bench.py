"""``sensorcast bench MODEL.tflite ...``: latency and memory of bundles on this device.

For each bundle (one per quantization mode the user wants to compare), each
thread count and each kernel set the runtime offers (XNNPACK, the default,
and the built-in kernels without delegates), it times two things per call:

* ``invoke``: the bare interpreter (``set_tensor``, ``invoke``, ``get_tensor``);
* ``forecast``: what the agent does per forecast (:meth:`Forecaster.predict`:
  normalize, quantize if int8, invoke, de-quantize, de-normalize);

and, for a bundle converted with ``--batch N``, one batched call of N windows.
It reports latency percentiles in milliseconds and the process's resident
memory (RSS) after loading each interpreter, so a user can pick a mode and a
thread count on their own Pi. numpy and the agent's runtime only: no TensorFlow.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import Bundle, read_bundle
from sensorcast.agent.forecast.runtime import Runtime, load_runtime

__all__ = ["BenchRow", "bench_bundle", "kernel_runtimes", "main_bench", "percentiles", "rss_mb"]

#: Percentiles reported, in percent.
PERCENTILES = (50, 90, 99)


@dataclass
class BenchRow:
    """One bundle x kernels x threads measurement; latencies in milliseconds."""

    model: str
    quantization: str
    kernels: str
    threads: int
    invoke_ms: dict[str, float] = field(default_factory=dict)
    forecast_ms: dict[str, float] = field(default_factory=dict)
    #: One batched call of ``batch`` windows, per window (bundles made with ``--batch``).
    batch_per_window_ms: Optional[dict[str, float]] = None
    batch: int = 1
    rss_mb: float = 0.0
    error: Optional[str] = None


def rss_mb() -> float:
    """This process's resident memory in MB (VmRSS; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(samples_ns: np.ndarray) -> dict[str, float]:
    """``{"p50": ms, "p90": ms, "p99": ms, "mean": ms}`` of per-call times in nanoseconds."""
    ms = samples_ns / 1e6
    out = {f"p{p}": float(np.percentile(ms, p)) for p in PERCENTILES}
    out["mean"] = float(ms.mean())
    return out


def _time_calls(fn: Callable[[], Any], iterations: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    samples = np.empty(iterations, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(iterations):
        t0 = clock()
        fn()
        samples[i] = clock() - t0
    return samples


def kernel_runtimes(runtime: Runtime) -> list[tuple[str, Runtime]]:
    """The runtime with its default kernels (XNNPACK) and, if offered, built-in kernels only."""
    out = [("xnnpack", runtime)]
    module = sys.modules.get(getattr(runtime.interpreter_class, "__module__", ""), None)
    resolver = getattr(module, "OpResolverType", None)
    if resolver is None and runtime.name == "tensorflow":
        resolver = getattr(getattr(module, "experimental", None), "OpResolverType", None)
    plain = getattr(resolver, "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None)
    if plain is not None:
        cls = functools.partial(runtime.interpreter_class, experimental_op_resolver_type=plain)
        out.append(("builtin", Runtime(runtime.name, cls, runtime.version)))
    return out


def bench_bundle(
    bundle: Bundle,
    runtime: Runtime,
    kernels: str,
    threads: int,
    iterations: int,
    warmup: int,
    seed: int = 0,
) -> BenchRow:
    """Time one bundle with one kernel set and thread count; never raises for a model error."""
    m = bundle.manifest
    row = BenchRow(bundle.label, m.quantization, kernels, threads, batch=m.batch)
    try:
        forecaster = Forecaster(bundle, runtime, num_threads=threads)
    except Exception as exc:  # a runtime that cannot load this bundle: report, go on
        row.error = str(exc).splitlines()[0]
        return row
    rng = np.random.default_rng(seed)
    norm = m.normalization
    mean = np.array([norm[f].mean if norm else 0.0 for f in m.features])
    std = np.array([norm[f].std if norm else 1.0 for f in m.features])
    window = (mean + std * rng.standard_normal((m.window, len(m.features)))).astype(np.float32)

    interp: Any = runtime.interpreter(bundle.model, threads)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = np.zeros(inp["shape"], dtype=inp["dtype"])
    in_index, out_index = inp["index"], out["index"]

    def bare() -> None:
        interp.set_tensor(in_index, x)
        interp.invoke()
        interp.get_tensor(out_index)

    row.invoke_ms = percentiles(_time_calls(bare, iterations, warmup))
    row.forecast_ms = percentiles(
        _time_calls(functools.partial(forecaster.predict, window), iterations, warmup)
    )
    if m.batch > 1:
        windows = [window] * m.batch
        calls = max(3, iterations // m.batch)
        samples = _time_calls(
            functools.partial(forecaster.predict_batch, windows), calls, max(1, warmup // m.batch)
        )
        row.batch_per_window_ms = percentiles(samples / m.batch)
    row.rss_mb = rss_mb()
    return row


def _fmt(d: Optional[dict[str, float]]) -> str:
    if not d:
        return "-"
    return " / ".join(f"{d[f'p{p}']:.3f}" for p in PERCENTILES)


def render(rows: list[BenchRow], runtime: Runtime, iterations: int, start_rss: float) -> str:
    """The rows as a plain-text table."""
    head = (
        f"{'model':<26} {'mode':<8} {'kernels':<8} {'thr':>3}  "
        f"{'invoke p50/p90/p99 ms':<24} {'forecast p50/p90/p99 ms':<24} "
        f"{'batch/window p50 ms':<20} {'RSS MB':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.error:
            lines.append(
                f"{r.model:<26} {r.quantization:<8} {r.kernels:<8} {r.threads:>3}  "
                f"unavailable: {r.error}"
            )
            continue
        batch = f"{r.batch_per_window_ms['p50']:.3f} (x{r.batch})" if r.batch_per_window_ms else "-"
        lines.append(
            f"{r.model:<26} {r.quantization:<8} {r.kernels:<8} {r.threads:>3}  "
            f"{_fmt(r.invoke_ms):<24} {_fmt(r.forecast_ms):<24} {batch:<20} {r.rss_mb:>6.1f}"
        )
    lines.append(
        f"{runtime.name} {runtime.version}, Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; {iterations} calls per cell after a "
        f"warm-up; RSS of this process after loading the cell's interpreters "
        f"(before any: {start_rss:.1f} MB)"
    )
    return "\n".join(lines)


def main_bench(
    models: list[Path],
    runtime_name: Optional[str] = None,
    threads: Optional[list[int]] = None,
    iterations: int = 1000,
    warmup: int = 50,
    as_json: bool = False,
) -> int:
    """Run the benchmark and print a table (or JSON); returns the exit code."""
    start_rss = rss_mb()
    runtime = load_runtime(runtime_name)
    counts = threads or sorted({1, min(2, os.cpu_count() or 1), min(4, os.cpu_count() or 1)})
    bundles = [read_bundle(p) for p in models]  # every file checked before any timing
    rows = [
        bench_bundle(bundle, rt, kernels, n, iterations, warmup)
        for bundle in bundles
        for kernels, rt in kernel_runtimes(runtime)
        for n in counts
    ]
    if as_json:
        data = {
            "runtime": {"name": runtime.name, "version": runtime.version},
            "machine": platform.machine(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "iterations": iterations,
            "start_rss_mb": start_rss,
            "rows": [asdict(r) for r in rows],
        }
        print(json.dumps(data, indent=2))
    else:
        print(render(rows, runtime, iterations, start_rss))
    return 0 if any(r.error is None for r in rows) else 1
