"""Question 8 (issue 18, target 6): the LSTM's quantization modes, float32 vs int8 vs dynamic.

The LSTM(64) x 48 x 3 features converted three ways by this checkout's converter
(:func:`bench.agent.models.child_prepare`): float32, full int8 (the fused
``UNIDIRECTIONAL_SEQUENCE_LSTM``) and dynamic range. A child times, the modes taking turns in
each round, the bare ``set_tensor``/``invoke``/``get_tensor`` loop and the agent's own
``Forecaster.predict`` per mode (one thread, XNNPACK as the agent runs it), then runs the
device-side comparison ``sensorcast bench`` prints (:func:`sensorcast.agent.bench.compare`)
on the same bundles. Here on x86 with LiteRT (:func:`measure`); under QEMU arm64 the same
child runs in the chroot (:mod:`bench.agent.qemu`, which puts its results under
``r["qemu"]["modes"]``): emulated, so ratios to float32 only.
"""

from __future__ import annotations

import functools
import importlib
import platform
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench.agent.context import Run
from bench.agent.drive import driver
from bench.agent.path import bare_loop
from bench.harness.markdown import fr, ratio, table, us
from bench.harness.timing import Stage, interleaved

__all__ = ["MODES", "bundles", "child_modes", "measure", "render", "spec", "targets"]

#: The modes compared, float32 (the reference of the ratios) first; the ``prepare`` keys.
MODES = {"float32": "lstm_f32", "int8": "lstm_int8", "dynamic": "lstm_dynamic"}


def bundles(run: Run) -> dict[str, str]:
    """The LSTM's bundles by mode, those the ``prepare`` child made."""
    return {mode: str(run.prep[key]) for mode, key in MODES.items() if run.prep.get(key)}


def spec(
    run: Run, paths: dict[str, str], emulated: bool, tree_root: Optional[str] = None
) -> dict[str, Any]:
    """The ``modes`` child's spec for the after tree (``tree_root`` as the child sees it)."""
    return {
        **run.after.spec(tree_root),
        "bundles": paths,
        "n": (20 if run.quick else 40) if emulated else (300 if run.quick else 1000),
        "rounds": 3 if emulated else run.rounds,
        "cli_iterations": 30 if emulated else 300,
        "runtime": "litert",
        "label": "qemu" if emulated else "x86",
    }


def measure(run: Run) -> None:
    """x86: ``run.r["modes"]`` gets the child's result (None if it failed)."""
    paths = bundles(run)
    if "float32" not in paths or len(paths) < 2:
        run.r["modes"] = {"error": f"bundles missing (have {', '.join(paths) or 'none'})"}
        return
    run.r["modes"] = {"x86": run.child("modes", spec(run, paths, emulated=False))}


def _window(manifest: Any) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((manifest.window, len(manifest.features))).astype(np.float32)


def child_modes(spec: dict[str, Any]) -> dict[str, Any]:
    """Per mode: bare invoke and ``Forecaster.predict`` (µs, wall and CPU), and the device
    comparison of ``sensorcast bench`` on the same bundles (its text and its choice)."""
    drv = driver(spec)
    runtime = drv.load_runtime(spec.get("runtime"))
    n = spec["n"]
    stages: dict[str, Stage] = {}
    info: dict[str, Any] = {}
    loaded = {}
    for mode, path in spec["bundles"].items():
        bundle = drv.read_bundle(Path(path))
        m = bundle.manifest
        info[mode] = {"size": Path(path).stat().st_size, "quantization": m.quantization,
                      "recurrence": m.recurrence, "ops": m.ops}  # fmt: skip
        try:
            fc = drv.forecaster(bundle, runtime)
            bare = bare_loop(runtime, bundle.model)
        except Exception as exc:  # a runtime that cannot load this mode: say so, go on
            info[mode]["error"] = str(exc).splitlines()[0]
            continue
        window = _window(m)
        stages[f"{mode} invoke"] = (bare, n, None)
        stages[f"{mode} forecast"] = (functools.partial(fc.predict, window), n, None)
        loaded[mode] = path
    return {
        "runtime": f"{runtime.name} {runtime.version}",
        "machine": platform.machine(),
        "modes": info,
        "stages": interleaved(stages, spec["rounds"]),
        "cli": _device_comparison(spec, runtime, list(loaded.values())),
    }


def _device_comparison(spec: dict[str, Any], runtime: Any, paths: list[str]) -> dict[str, Any]:
    """What ``sensorcast bench BUNDLES --threads 1`` shows as its comparison of modes."""
    try:
        bench = importlib.import_module(f"{spec['package']}.bench")
        compare = bench.compare
    except (ImportError, AttributeError) as exc:
        return {"error": f"this tree's sensorcast bench does not compare modes ({exc})"}
    iters = spec["cli_iterations"]
    found = [bench.read_bundle(Path(p)) for p in paths]
    rows = [bench.bench_bundle(b, runtime, "xnnpack", 1, iters, max(3, iters // 10))
            for b in found]  # fmt: skip
    c = compare(found, rows)
    if c is None:
        return {"error": "fewer than two bundles ran"}
    fastest = next((r.mode for r in c.rows if r.fastest), None)
    return {"lines": bench.render_comparison(c).splitlines(), "fastest": fastest,
            "recommendation": c.recommendation}  # fmt: skip


def _stage(res: dict[str, Any], mode: str, what: str) -> Optional[dict[str, Any]]:
    got: Optional[dict[str, Any]] = res.get("stages", {}).get(f"{mode} {what}")
    return got


def fastest(
    res: Optional[dict[str, Any]], what: str = "forecast", key: str = "cpu_us"
) -> Optional[str]:
    """The mode with the least ``key`` per ``what`` (``forecast`` or ``invoke``) in a result."""
    if not res:
        return None
    timed = {m: s[key] for m in res.get("modes", {}) if (s := _stage(res, m, what)) and s.get(key)}
    return min(timed, key=timed.__getitem__) if timed else None


def _platforms(r: dict[str, Any]) -> list[tuple[str, str, Optional[dict[str, Any]]]]:
    """(short name, long name, result or None if it failed): x86 LiteRT, each QEMU runtime."""
    out: list[tuple[str, str, Optional[dict[str, Any]]]] = []
    m = r.get("modes") or {}
    if "x86" in m:
        out.append(("x86", "x86_64, LiteRT", m["x86"]))
    for rt, res in ((r.get("qemu") or {}).get("modes") or {}).items():
        out.append((f"qemu {rt}", f"arm64 under QEMU, {rt} (emulated)", res))
    return out


def _rows(where: str, res: dict[str, Any]) -> list[list[str]]:
    rows = []
    f32 = {w: _stage(res, "float32", w) for w in ("invoke", "forecast")}
    best = fastest(res)
    emulated = "QEMU" in where
    for mode, info in res.get("modes", {}).items():
        inv, fc = _stage(res, mode, "invoke"), _stage(res, mode, "forecast")
        if "error" in info:
            rows.append([where, mode, f"{info['size'] / 1024:.1f}", "unavailable: " + info["error"],
                         "", "", "", "", ""])  # fmt: skip
            continue
        rows.append(
            [
                where,
                f"**{mode}**" if mode == best else mode,
                f"{info['size'] / 1024:.1f}",
                "-" if emulated else us(inv),
                "-" if emulated else us(fc),
                fr(ratio(inv, f32["invoke"], "cpu_us")),
                fr(ratio(fc, f32["forecast"], "cpu_us")),
                fr(ratio(fc, f32["forecast"])),
                fr(ratio(fc, inv, "cpu_us")),
            ]
        )
    return rows


def render(r: dict[str, Any]) -> list[str]:
    """Section 8: the modes per platform, ratios to float32, the fastest in bold."""
    out = ["## 8. Quantization modes of LSTM(64) x 48: float32, int8 (fused), dynamic", ""]
    m = r.get("modes")
    if not m or "error" in m:
        return [*out, f"Not measured: {(m or {}).get('error', 'not run')}.", ""]
    head = ["platform", "mode", "size KB", "bare invoke µs", "forecast µs",
            "invoke vs float32 (CPU)", "forecast vs float32 (CPU)", "forecast vs float32 (wall)",
            "forecast / invoke (CPU)"]  # fmt: skip
    rows: list[list[str]] = []
    notes: list[str] = []
    for _, where, res in _platforms(r):
        if not res:
            notes.append(f"- {where}: the child failed (see failures)")
            continue
        rows += _rows(where, res)
        cli = res.get("cli") or {}
        said = cli.get("recommendation") or cli.get("error", "-")
        notes.append(f"- {where} ({res.get('runtime')}): `sensorcast bench` says: {said}")
    return [
        *out,
        "One child per platform, the modes taking turns in each round; one thread, the "
        "runtime's default kernels (XNNPACK) as the agent runs them; forecast = the agent's "
        "`Forecaster.predict` (int8: quantize, reset the fused LSTM's state, invoke, "
        "de-quantize). Ratios of process CPU time per call (medians of the rounds); under "
        "QEMU only ratios mean anything. Fastest forecast per platform in bold.",
        "",
        *table(head, rows),
        "",
        *notes,
        "",
    ]


def targets(r: dict[str, Any]) -> list[tuple[str, str, Optional[bool]]]:
    """Target 6: int8 vs float32 reported on x86 and under QEMU, and the fastest on each."""
    figures, measured, both = [], set(), {"x86", "qemu"}
    for short, _, res in _platforms(r):
        f32 = _stage(res or {}, "float32", "forecast")
        x = ratio(_stage(res or {}, "int8", "forecast"), f32, "cpu_us")
        if x is not None:
            measured.add(short.split()[0])
        figures.append(f"{short}: int8 {fr(x)} float32's CPU, fastest {fastest(res) or '-'}")
    return [
        (
            "6. int8 vs float32 forecast time, x86 and arm64 (QEMU, ratios); "
            "`sensorcast bench` names the fastest mode on the device",
            "; ".join(figures) or "-",
            None if not any(f.startswith("qemu") for f in figures) else measured == both,
        )
    ]
