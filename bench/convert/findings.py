"""The Findings section: plain-words answers, each computed from the numbers."""

from __future__ import annotations

from typing import Any, Optional

from bench.convert.grid import BUDGET, PROJECT_MODES, VARIANTS
from bench.harness.markdown import fmt_ms, fmt_rel, fmt_size

__all__ = ["Answer", "findings"]

Point = dict[str, Any]
#: (variant, config, timing entry) of the fastest within budget.
Best = Optional[tuple[str, str, dict[str, Any]]]
#: Per point: the point, ORT's bar (route, ms), the best offered mode, the best of any variant.
Answer = tuple[Point, Optional[tuple[str, float]], Best, Best]


def lit(pt: Point, v: str, c: str = "1T") -> dict[str, Any]:
    """LiteRT's timing of variant ``v`` in configuration ``c`` (empty if none)."""
    e = pt.get("litert", {}).get(v, {}).get(c)
    return e if isinstance(e, dict) and "ms" in e else {}


def span(r: list[float], unit: str = "x") -> str:
    """``min to max`` of a list of ratios (or ``n/a``)."""
    if not r:
        return "n/a"
    return f"{min(r):.2f}{unit} to {max(r):.2f}{unit}"


def ms(value: float) -> str:
    """Milliseconds as the tables print them."""
    return fmt_ms({"ms": value})


def mb(kb: Any) -> str:
    """KiB as whole MB (``?`` if not measured)."""
    return f"{kb / 1024:.0f} MB" if isinstance(kb, int) else "?"


def _wins(answers: list[Answer]) -> tuple[list[Answer], list[Answer]]:
    yes = [a for a in answers if a[1] and a[2] and a[2][2]["ms"] <= a[1][1]]
    return yes, [a for a in answers if a not in yes]


def question4(points: list[Point], answers: list[Answer]) -> list[str]:
    """Is an offered mode as the agent runs it at least as fast as ORT within budget?"""
    yes, no = _wins(answers)
    if not no:
        lines = [
            f"- **Question 4: yes, on all {len(points)} grid points.** A mode the converter "
            "offers, run as the agent runs it (LiteRT, 1 thread, XNNPACK on), is at least as "
            f"fast as ONNX Runtime (the faster of its two routes, 1 thread) with MAE/std <= "
            f"{BUDGET:.0%}. Fastest offered mode within budget per point:"
        ]
    else:
        lines = [
            f"- **Question 4: no.** On {len(no)} of {len(points)} grid points no offered mode "
            f"(LiteRT, 1 thread, XNNPACK on) within MAE/std <= {BUDGET:.0%} is as fast as ONNX "
            f"Runtime; on {len(yes)} one is:"
        ]
    for pt, bar, offered, _ in answers:
        if not (bar and offered):
            lines.append(f"  - {pt['name']}: not measurable (ORT {bar}, offered {offered})")
            continue
        e = offered[2]
        lines.append(
            f"  - {pt['name']}: {offered[0]} {fmt_ms(e)} ms (MAE/std {fmt_rel(e['rel_mae'])}) vs "
            f"ORT {ms(bar[1])} ms ({'Loop' if bar[0] == 'onnx' else 'unrolled'}): "
            f"{bar[1] / e['ms']:.1f}x ORT's speed"
        )
    return lines + [_what_it_takes(pt, bar, anyv) for pt, bar, _, anyv in no if bar]


def _what_it_takes(pt: Point, bar: tuple[str, float], anyv: Best) -> str:
    if anyv and anyv[2]["ms"] <= bar[1]:
        v, c, e = anyv
        return (
            f"  - What it would take on {pt['name']}: {v} with LiteRT {c} runs "
            f"{fmt_ms(e)} ms (MAE/std {fmt_rel(e['rel_mae'])}, "
            f"{fmt_size(pt['variants'][v].get('bundle_bytes'))} bytes) vs ORT "
            f"{ms(bar[1])} ms."
        )
    return (
        f"  - On {pt['name']} no variant or configuration measured here beats "
        f"ORT's {ms(bar[1])} ms within budget."
    )


def float32_alone(answers: list[Answer]) -> list[str]:
    """The default float32 mode against ORT."""
    f32_vs, slower = [], []
    for pt, bar, _, _ in answers:
        f = lit(pt, "float32")
        if bar and f:
            f32_vs.append((bar[1] / f["ms"], pt, f["ms"], bar[1]))
            if f["ms"] > bar[1]:
                slower.append(pt["name"])
    if not f32_vs:
        return []
    worst = min(f32_vs, key=lambda t: t[0])
    text = (
        f"- The plain **float32** mode (the default, exact to ~1e-6 of the std; the LSTM as "
        f"a WHILE loop) alone runs at {span([t[0] for t in f32_vs])} ORT's speed; the "
        f"narrowest margin is {worst[1]['name']}: {ms(worst[2])} ms vs {ms(worst[3])} ms."
    )
    if slower:
        return [text + f" It is slower than ORT at: {', '.join(slower)}."]
    return [text + " So the answer does not depend on quantization at all."]


def mode_errors(points: list[Point]) -> list[str]:
    """MAE/std of each variant across the grid, and which ever misses the budget."""
    parts, missed = [], []
    for v in VARIANTS:
        r = [(lit(pt, v)["rel_mae"], pt["name"]) for pt in points if lit(pt, v)]
        if not r:
            continue
        over = [n for x, n in r if x > BUDGET]
        if over:
            missed.append(v)
        parts.append(
            f"{v} {fmt_rel(min(r)[0])} to {fmt_rel(max(r)[0])}"
            + (f" (**over the {BUDGET:.0%} budget** at {'; '.join(over)})" if over else "")
        )
    if not parts:
        return []
    verdict = (
        f"Only {', '.join(missed)} ever misses the budget."
        if missed
        else "Every variant stays within the budget everywhere."
    )
    return ["- **Error** (MAE/std vs Keras, LiteRT 1 thread): " + "; ".join(parts) + ". " + verdict]


def _xnnpack_hurts_unrolled(points: list[Point]) -> str:
    big = max(points, key=lambda pt: pt["window"] * pt["units"] ** 2)
    mem = big.get("memory", {})
    u_on, u_off = lit(big, "float32-unrolled"), lit(big, "float32-unrolled", "1T-noXNN")
    if not (u_on and u_off):
        return ""
    packed = big["window"] * 4 * big["units"] ** 2 * 4 / 2**20
    return (
        f" At {big['name']} XNNPACK hurts the unrolled model: {fmt_ms(u_on)} ms with "
        f"it, {fmt_ms(u_off)} ms without, and the interpreter grows by "
        f"{mb(mem.get('float32-unrolled', {}).get('XNNPACK'))} with XNNPACK vs "
        f"{mb(mem.get('float32-unrolled', {}).get('noXNN'))} without (the WHILE-loop "
        f"float32: {mb(mem.get('float32', {}).get('XNNPACK'))}). That fits XNNPACK "
        f"packing its own copy of the recurrent weights for each of the "
        f"{big['window']} unrolled steps ({big['window']} x 4 x {big['units']} x "
        f"{big['units']} floats = {packed:.0f} MB), which no longer fits in the CPU "
        "caches (an explanation that fits the numbers, not verified in XNNPACK's code)."
    )


def unrolling(points: list[Point]) -> list[str]:
    """Unrolled float32 against the WHILE loop."""
    faster: list[tuple[float, Point]] = []
    slower: list[tuple[float, Point]] = []
    for pt in points:
        a, b = lit(pt, "float32"), lit(pt, "float32-unrolled")
        if a and b:
            (faster if b["ms"] <= a["ms"] else slower).append((a["ms"] / b["ms"], pt))
    if not (faster or slower):
        return []
    text = (
        f"- **Unrolling** float32 (LiteRT, 1 thread, XNNPACK on) is faster than the WHILE "
        f"loop at {len(faster)} of {len(faster) + len(slower)} points "
        f"({span([t[0] for t in faster])} speed-up)"
    )
    if slower:
        text += ", slower at " + ", ".join(
            f"{pt['name']} ({1 / r:.2f}x slower)" for r, pt in slower
        )
    return [text + "." + _xnnpack_hurts_unrolled(points)]


def dynamic_unrolled(points: list[Point], answers: list[Answer]) -> list[str]:
    """Where the dynamic-unrolled experiment is the fastest within budget."""
    dyn_best = [a for a in answers if a[3] and a[3][0] == "dynamic-unrolled"]
    if not dyn_best:
        return []
    sizes = [
        (a[0]["variants"]["dynamic-unrolled"].get("bundle_bytes") or 0)
        / max(1, a[0]["variants"].get("dynamic", {}).get("bundle_bytes") or 1)
        for a in dyn_best
    ]
    gain = max(off[2]["ms"] / best[2]["ms"] for _, _, off, best in dyn_best if off and best)
    _, no = _wins(answers)
    return [
        f"- The fastest variant within budget is the **dynamic-unrolled** experiment "
        f"at {len(dyn_best)} of {len(points)} points. There it is up to "
        f"{gain:.1f}x faster than the best offered mode, but its bundle is {span(sizes)} the "
        "size of `dynamic`'s." + (" Every point is already won without it." if not no else "")
    ]


def _ratios(points: list[Point], v: str, slow: str, fast: str) -> list[float]:
    return [
        lit(pt, v, slow)["ms"] / lit(pt, v, fast)["ms"]
        for pt in points
        if lit(pt, v, slow) and lit(pt, v, fast)
    ]


def xnnpack_and_threads(points: list[Point]) -> list[str]:
    """XNNPACK on vs off, and 2 threads vs 1."""
    offered_x = [r for v in PROJECT_MODES for r in _ratios(points, v, "1T-noXNN", "1T")]
    threads = [r for v in VARIANTS for r in _ratios(points, v, "1T", "2T")]
    return [
        "- **XNNPACK** on vs off (LiteRT, 1 thread; speed-up = off ms / on ms): "
        + ", ".join(f"{v} {span(_ratios(points, v, '1T-noXNN', '1T'))}" for v in VARIANTS)
        + (
            ". XNNPACK speeds up every offered mode at every point, so the agent's default "
            "(XNNPACK on) is right."
            if offered_x and min(offered_x) > 1
            else "."
        ),
        "- **2 threads** vs 1 (LiteRT, XNNPACK on; speed-up = 1T ms / 2T ms): "
        + ", ".join(f"{v} {span(_ratios(points, v, '1T', '2T'))}" for v in VARIANTS)
        + f". 2 threads are slower in {sum(r < 1 for r in threads)} of {len(threads)} cases "
        "and more than 10 % faster in "
        f"{sum(r > 1.1 for r in threads)}. A batch-1 LSTM step is too small to split "
        "across threads, so the agent's num_threads=1 is right.",
    ]


def _tflite_runtime_cells(
    points: list[Point],
) -> tuple[dict[str, list[str]], dict[str, list[float]], list[float]]:
    """Its load failures, its ms / LiteRT's ms per variant, its int8 XNNPACK on / off."""
    fails: dict[str, list[str]] = {}
    by_variant: dict[str, list[float]] = {}
    xnn8: list[float] = []
    for pt in points:
        tr = pt.get("tflite_runtime", {})
        if not isinstance(tr, dict) or "error" in tr:
            continue
        for v in VARIANTS:
            e, le = tr.get(v, {}).get("1T"), lit(pt, v)
            if e and "error" in e:
                fails.setdefault(e["error"], []).append(f"{pt['name']} {v}")
            elif e and "ms" in e and le:
                by_variant.setdefault(v, []).append(e["ms"] / le["ms"])
        a, b = tr.get("int8", {}).get("1T", {}), tr.get("int8", {}).get("1T-noXNN", {})
        if "ms" in a and "ms" in b:
            xnn8.append(a["ms"] / b["ms"])
    return fails, by_variant, xnn8


def tflite_runtime(points: list[Point]) -> list[str]:
    """tflite-runtime 2.14 against LiteRT, what it cannot load, its int8 and XNNPACK."""
    fails, by_variant, xnn8 = _tflite_runtime_cells(points)
    text = "- **tflite-runtime 2.14** (1 thread, XNNPACK on), its ms / LiteRT's ms: " + ", ".join(
        f"{v} {span(r)}" for v, r in by_variant.items()
    )
    if xnn8:
        text += (
            f". Its int8 runs as slowly with XNNPACK on as off ({span(xnn8)}), so its "
            "XNNPACK does not take these int8 operators and they run on TFLite's built-in "
            "kernels"
        )
    for err, where in fails.items():
        kinds = sorted({w.split(" ")[-1] for w in where})
        text += f". It cannot load {len(where)} bundles, every {' and '.join(kinds)} one: `{err}`"
    return [text + "."]


def sizes(points: list[Point]) -> list[str]:
    """How the bundles grow with the window, and why int8's grows fastest."""
    top = max(p["units"] for p in points)
    parts = []
    for pt in sorted(points, key=lambda pt: (pt["units"], pt["window"])):
        c = pt["variants"].get("int8", {})
        if c.get("tflite_bytes") and pt["units"] == top:
            parts.append(
                f"W={pt['window']}: {c['tflite_bytes']:,} bytes, {c['name_bytes']:,} of them "
                f"tensor names, {c['const_bytes']:,} constants"
            )
    if not parts:
        return []
    big = max(points, key=lambda pt: (pt["window"], pt["units"]))
    c8, cf = big["variants"].get("int8", {}), big["variants"].get("float32", {})
    growth = c8.get("tflite_bytes", 0) / max(1, cf.get("tflite_bytes", 1))
    return [
        "- **Bundle size.** The WHILE-loop modes do not grow with the window. The "
        "unrolled ones copy the cell's operators and tensors once per step; the weights "
        "are not copied. The offered int8 (unrolled) grows fastest, because of its "
        "tensor names: names "
        "such as `lstm/unstack;lstm/unstack1;...` list every step, so their bytes grow "
        "with the window squared. For the largest units: "
        + "; ".join(parts)
        + f". At {big['name']} int8 is {growth:.1f}x "
        f"the float32 file. With short tensor names it would be "
        f"{c8.get('short_names_bytes', 0):,} bytes."
    ]


def references(points: list[Point]) -> list[str]:
    """What Keras ``predict`` and a ``tf.function`` call cost."""

    def got(key: str) -> list[float]:
        entries = (pt.get("reference", {}).get(key, {}) for pt in points)
        return [e["ms"] for e in entries if "ms" in e]

    kp, tfn = got("keras_predict"), got("tf_function")
    if not (kp and tfn):
        return []
    return [
        f"- References: Keras `predict` on one window costs {span(kp, ' ms')} (per-call "
        f"overhead, not compute) and a `tf.function` call {span(tfn, ' ms')}. Both are "
        "far slower than every TFLite variant and than ORT."
    ]


def findings(points: list[Point], answers: list[Answer]) -> list[str]:
    """Every finding, in the order the results file gives them."""
    return [
        *question4(points, answers),
        *float32_alone(answers),
        *mode_errors(points),
        *unrolling(points),
        *dynamic_unrolled(points, answers),
        *xnnpack_and_threads(points),
        *tflite_runtime(points),
        *sizes(points),
        *references(points),
    ]
