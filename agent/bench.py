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

Given several bundles (files, or a directory of them), it then compares them as
the agent runs them (XNNPACK, one thread): each one's forecast and invoke
latency, size, mode and measured error (from its manifest), the fastest marked,
and a one-line recommendation (:func:`compare`).
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
from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.forecaster import Forecaster
from sensorcast.agent.forecast.manifest import Bundle, read_bundle
from sensorcast.agent.forecast.runtime import Runtime, load_runtime

__all__ = [
    "BenchRow",
    "Comparison",
    "ModeRow",
    "bench_bundle",
    "bundle_paths",
    "compare",
    "kernel_runtimes",
    "main_bench",
    "percentiles",
    "render_comparison",
    "rss_mb",
]

#: Percentiles reported, in percent.
PERCENTILES = (50, 90, 99)
#: Bundles whose forecast p50 is within this fraction of the fastest's are about a tie.
CLOSE = 0.10


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
    path: str = ""  #: The bundle file, as given.


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
    row.path = str(bundle.path)
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


@dataclass
class ModeRow:
    """One bundle in the comparison of modes; latencies in milliseconds."""

    path: str
    mode: str  #: The manifest's quantization.
    recurrence: str  #: The manifest's recurrence (``fused``, ``loop``, ...), or ``-``.
    format: int  #: The manifest's format version.
    size_bytes: int
    forecast_ms: dict[str, float] = field(default_factory=dict)
    invoke_ms: dict[str, float] = field(default_factory=dict)
    #: The manifest's measured error against the float reference model (MAE, target units)
    #: and as a fraction of the targets' std; None where the manifest has none.
    mae: Optional[float] = None
    mae_of_std: Optional[float] = None
    #: Forecast p50 over the float32 bundle's (None: no float32 bundle, or this one failed).
    vs_float32: Optional[float] = None
    fastest: bool = False
    error: Optional[str] = None


@dataclass
class Comparison:
    """Several bundles side by side, as the agent runs them, and the fastest."""

    kernels: str
    threads: int
    rows: list[ModeRow]
    fastest: Optional[str]  #: The fastest bundle's path (None: none ran).
    recommendation: str
    notes: list[str] = field(default_factory=list)


def bundle_paths(models: list[Path]) -> list[Path]:
    """The bundle files: each path as given, a directory's ``*.tflite`` files sorted."""
    out: list[Path] = []
    for p in models:
        if not p.is_dir():
            out.append(p)
            continue
        found = sorted(q for q in p.glob("*.tflite") if q.is_file())
        if not found:
            raise ModelError(f"{p}: no .tflite bundles in this directory")
        out += found
    return out


def _mode_row(bundle: Bundle, row: Optional[BenchRow]) -> ModeRow:
    m = bundle.manifest
    acc = m.accuracy
    mae, of_std = None, None
    if acc is not None:
        mae = acc.mae
        of_std = acc.mae / acc.target_std if acc.target_std > 0 else None
    out = ModeRow(
        str(bundle.path), m.quantization, m.recurrence or "-", m.format,
        bundle.path.stat().st_size, mae=mae, mae_of_std=of_std,
    )  # fmt: skip
    if row is None or row.error:
        out.error = row.error if row is not None else "not measured"
    else:
        out.forecast_ms, out.invoke_ms = row.forecast_ms, row.invoke_ms
    return out


def _recommend(rows: list[ModeRow], best: ModeRow) -> str:
    ran = sorted((r for r in rows if not r.error), key=lambda r: r.forecast_ms["p50"])
    f32 = next((r for r in ran if r.mode == "float32"), None)
    other = f32 if f32 is not None and f32 is not best else (ran[1] if len(ran) > 1 else None)
    p50 = best.forecast_ms["p50"]
    versus = ""
    if other is not None:
        versus = f", {other.forecast_ms['p50'] / p50:.2f}x as fast as {other.mode}"
    err = ""
    if best.mae_of_std is not None:
        err = f"; its error vs the float model: {100 * best.mae_of_std:.2f}% of the targets' std"
    close = ""
    if len(ran) > 1 and ran[1].forecast_ms["p50"] < (1 + CLOSE) * p50:
        close = (
            f"; {ran[1].mode} is within {CLOSE:.0%}: about a tie here (rerun, or choose on "
            "size and error)"
        )
    return (
        f"fastest here: {best.mode} (forecast p50 {p50:.3f} ms{versus}); "
        f'set model = "{best.path}" in the stream\'s [streams.<name>] table{err}{close}'
    )


def compare(bundles: list[Bundle], rows: list[BenchRow]) -> Optional[Comparison]:
    """Two or more bundles compared as the agent runs them (XNNPACK, the fewest threads
    timed, 1 by default), the fastest by forecast p50; None for a single bundle."""
    if len(bundles) < 2:
        return None
    threads = min(r.threads for r in rows)
    cell = {r.path: r for r in rows if r.kernels == "xnnpack" and r.threads == threads}
    modes = [_mode_row(b, cell.get(str(b.path))) for b in bundles]
    ran = [r for r in modes if not r.error]
    f32 = next((r for r in ran if r.mode == "float32"), None)
    for r in ran:
        r.vs_float32 = r.forecast_ms["p50"] / f32.forecast_ms["p50"] if f32 else None
    notes = []
    sources = {b.manifest.source_sha256[:12] or "?" for b in bundles}
    if len(sources) > 1:
        notes.append(
            f"note: these bundles come from {len(sources)} different models "
            f"(source sha256 {', '.join(sorted(sources))}): compare modes of one model"
        )
    if not ran:
        return Comparison("xnnpack", threads, modes, None, "no bundle ran here", notes)
    best = min(ran, key=lambda r: r.forecast_ms["p50"])
    best.fastest = True
    return Comparison("xnnpack", threads, modes, best.path, _recommend(modes, best), notes)


def _mode_line(r: ModeRow) -> str:
    mark = "*" if r.fastest else " "
    head = f"{mark} {r.mode:<8} {r.recurrence:<9} {r.size_bytes / 1024:>8.1f}"
    if r.error:
        return f"{head}  unavailable: {r.error}  {r.path}"
    f, i = r.forecast_ms, r.invoke_ms
    vs = f"{r.vs_float32:.2f}x" if r.vs_float32 is not None else "-"
    err = "-"
    if r.mae is not None:
        err = f"{r.mae:.4g}" + (f" ({100 * r.mae_of_std:.2f}%)" if r.mae_of_std is not None else "")
    return f"{head} {f['p50']:>9.3f} {f['p90']:>9.3f} {i['p50']:>9.3f} {vs:>7}  {err:<20} {r.path}"


def render_comparison(c: Comparison) -> str:
    """The comparison as plain text: a table, the fastest marked ``*``, the recommendation."""
    head = (
        f"  {'mode':<8} {'recurr.':<9} {'size KB':>8} {'fc p50':>9} {'fc p90':>9} "
        f"{'inv p50':>9} {'vs f32':>7}  {'error vs float':<20} bundle"
    )
    lines = [
        f"modes compared as the agent runs them ({c.kernels}, {c.threads} thread"
        f"{'s' if c.threads > 1 else ''}): forecast (fc) = Forecaster.predict, invoke (inv) = "
        "bare interpreter, ms; vs f32 = forecast p50 over float32's; error vs float = the "
        "manifest's MAE vs the float model (% of the targets' std)",
        head,
        "-" * len(head),
        *(_mode_line(r) for r in c.rows),
        *c.notes,
        c.recommendation,
    ]
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
    # every file checked before any timing
    bundles = [read_bundle(p) for p in bundle_paths(models)]
    rows = [
        bench_bundle(bundle, rt, kernels, n, iterations, warmup)
        for bundle in bundles
        for kernels, rt in kernel_runtimes(runtime)
        for n in counts
    ]
    comparison = compare(bundles, rows)
    if as_json:
        data: dict[str, Any] = {
            "runtime": {"name": runtime.name, "version": runtime.version},
            "machine": platform.machine(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "iterations": iterations,
            "start_rss_mb": start_rss,
            "rows": [asdict(r) for r in rows],
        }
        if comparison is not None:
            data["comparison"] = asdict(comparison)
        print(json.dumps(data, indent=2))
    else:
        print(render(rows, runtime, iterations, start_rss))
        if comparison is not None:
            print()
            print(render_comparison(comparison))
    return 0 if any(r.error is None for r in rows) else 1
