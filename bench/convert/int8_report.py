"""The ``--int8`` question's section of ``bench/RESULTS-convert.md``, and splicing it in.

The section is the file's last (from :data:`HEADING` on): ``--int8`` rewrites only it, and a
full grid run keeps it (:func:`splice`).
"""

from __future__ import annotations

from typing import Any, Optional

from bench.convert.int8 import CANDIDATES, EPOCHS, MODELS, N_HELD, N_HELD_QEMU, WINDOW
from bench.harness.markdown import table

__all__ = ["HEADING", "render", "section_of", "splice"]

HEADING = "## int8 candidates (issue 15): keeping the recurrence a loop"
TITLES = {
    "float32": "float32",
    "dynamic": "dynamic",
    "int8": "**int8, fused LSTM**",
    "int8-unrolled": "int8, unrolled (before issue 15)",
}
RECURRENCE = {"loop": "WHILE", "fused": "fused op", "unrolled": "unrolled", "none": "none"}


def section_of(text: str) -> Optional[str]:
    """The int8 section of a results file's ``text`` (to its end), or None."""
    at = text.find(HEADING)
    return text[at:] if at >= 0 else None


def splice(text: str, section: str) -> str:
    """``text`` with its int8 section replaced by ``section`` (appended if it had none)."""
    at = text.find(HEADING)
    head = text[:at] if at >= 0 else text
    return head.rstrip("\n") + "\n\n\n" + section.rstrip("\n") + "\n"


def _err(found: Optional[dict[str, Any]], name: str) -> str:
    if not found or "errors" not in found:
        return "—"
    e = found["errors"][name]
    return f"{e['mae']:.2f} / {e['max']:.2f}"


def _latency(found: Optional[dict[str, Any]]) -> str:
    if not found:
        return "—"
    if "error" in found:
        return f"fails: {found['error'][:80]}"
    return f"{found['ms']:.3f} ({found.get('ratio', float('nan')):.2f}x)"


def _row(name: str, res: dict[str, Any], f32_bytes: int, x86: Any, qemu: Any) -> list[str]:
    if "error" in res:
        return [TITLES[name], f"conversion failed: {res['error'][:120]}", *[""] * 8]
    x, q = (x86 or {}).get("bundles", {}).get(name), (qemu or {}).get("bundles", {}).get(name)
    rec = RECURRENCE.get(res["recurrence"], res["recurrence"])
    if res.get("fused_ops"):
        rec = f"{res['fused_ops']} x `UNIDIRECTIONAL_SEQUENCE_LSTM`"
    return [
        TITLES[name],
        rec,
        f"{res['bundle_bytes']:,}",
        f"{res['bundle_bytes'] / f32_bytes:.2f}x" if f32_bytes else "—",
        _err(x, "held"),
        _err(x, "shift1"),
        _err(x, "shift2"),
        _latency(x),
        _err(q, "held"),
        _latency(q),
    ]


HEAD = [
    "candidate",
    "recurrence",
    "bundle bytes",
    "vs float32",
    "held-out MAE / max %",
    "+1 std MAE / max %",
    "+2 std MAE / max %",
    "x86 ms (vs float32)",
    "arm64 QEMU held-out MAE / max %",
    "arm64 QEMU ms, emulated (vs float32)",
]


def _model_lines(key: str, model: dict[str, Any]) -> list[str]:
    title = MODELS[key][0]
    if "error" in model:
        return [f"### {title}", "", model["error"], ""]
    cands = model["candidates"]
    f32 = cands.get("float32", {}).get("bundle_bytes", 0)
    x86, qemu = model.get("x86"), model.get("qemu")
    rows = [_row(c, cands[c], f32, x86, qemu) for c in CANDIDATES if c in cands]
    prep = model["prep"]
    notes = [
        f"{prep['params']:,} parameters, training loss {prep['train_loss']:.4f}, "
        f"targets' std {prep['target_std']:.3f}; int8 calibration: {model['calibration']}."
    ]
    for where, res in (("x86", x86), ("arm64 QEMU", qemu)):
        if res and "error" in res:
            notes.append(f"{where} run failed: {res['error']}")
    return [f"### {title}", "", *table(HEAD, rows), "", *notes, ""]


def render(result: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    """The whole section."""
    load = result["load"]
    lines = [
        HEADING,
        "",
        f"Written by `{command}` (the `--int8` question, `bench/convert/int8.py`) on "
        f"{machine['date']}, commit {str(machine['commit']).split()[0]}: {machine['cpu']}, "
        f"{machine['usable_cores']} usable cores. **Load average (1, 5, 15 min) from other "
        f"jobs**: {load['start']} at the start, {load.get('x86', '?')} before the x86 timing, "
        f"{load.get('qemu', '?')} before the QEMU timing, {load.get('end', '?')} at the end: "
        "absolute times are noisy, the ratios to float32 (same process, candidates taking "
        "turns within each round) much less so.",
        "",
        f"Models: `Sequential([Input(({WINDOW}, 3)), LSTM(64)[, LSTM(64)], Dense(12)])`, "
        f"trained {EPOCHS} epochs (seeded) on the benchmark's synthetic 3-feature series. "
        "float32, dynamic and int8 are made by the converter's own `convert_in_child`; the "
        "unrolled int8 by `unrolled_clone` with the same calibration (the converter's int8 "
        "before issue 15). Sizes are bundles (the .tflite with the sensorcast manifest).",
        "",
        f"Errors: each bundle against Keras `predict` on {N_HELD} held-out windows "
        "(`held-out`), and on the same windows with every feature shifted by +1 and +2 of its "
        "std over the training rows (out of the data's range, so past the int8 calibration "
        "range's edge), as MAE / max abs error in % of the targets' std. Latency: LiteRT "
        "(`ai_edge_litert`), 1 thread, XNNPACK on, one window per call as the agent runs it "
        "(`reset_all_variables`, `set_tensor`, `invoke`, `get_tensor`); median of 7 rounds "
        "of 0.3 s, the candidates taking turns; in brackets the median per-round ratio to "
        "float32.",
        "",
        f"**arm64 under QEMU is emulation, not a Pi**: qemu-user on this x86 host, the arm64 "
        f"Debian chroot of `deploy/qemu/run` (env layer `{result.get('qemu_note', '')}`), LiteRT's "
        "aarch64 wheel. Its times are the emulator's; read only the ratios between candidates "
        f"(5 rounds of 1 s; errors on {N_HELD_QEMU} held-out windows, checking that the "
        "arm64 kernels compute what the x86 ones do).",
        "",
    ]
    for key, model in result["models"].items():
        lines += _model_lines(key, model)
    return "\n".join([*lines, *_findings(result), *EARLIER])


#: What helper H1 found with scratch scripts on 2026-12-03 and this question does not re-measure.
EARLIER = [
    "Found earlier (helper H1, scratch scripts, 2026-12-03; not re-measured by `--int8`):",
    "",
    "- **The fused op keeps its output and cell state in variable tensors** that persist "
    "between `invoke()` calls: without `reset_all_variables()` before each window, every "
    'window starts from the previous one\'s final state (the earlier "0.3 % float mismatch"; '
    "LSTM(64) float32 fused: 8.8 % / 31 % of the std off, exact to 1e-7 with the reset). The "
    "agent's Forecaster resets before each invoke; the timings above include the reset. The "
    "op's `cell_clip` of 10 never bit (max |c| = 1.7).",
    "- **GRU**: TFLite has no fused GRU op; a GRU's int8 stays unrolled (larger than float32). "
    "For a small GRU bundle, `dynamic` is the mode.",
    "- **tflite-runtime 2.14** cannot load the `dynamic` bundles (FULLY_CONNECTED v12); it "
    "runs the fused int8 bundles.",
    "- **ai-edge-quantizer** (stacked model): `dynamic_wi8_afp32` 0.40x float32 but wrong on "
    "tflite-runtime 2.14 (88 % / 182 % of the std); `weight_only_wi8_afp32` `dynamic`'s size "
    "and slower; `static_wi8_ai8` cannot calibrate the WHILE loop (`Tensor data is null`). "
    "`dynamic` already is the selective candidate (int8 weights, float recurrence): no new "
    "mode.",
    "",
]


def _findings(result: dict[str, Any]) -> list[str]:
    """One line per model, computed from this run's figures."""
    out = ["Findings of this run:", ""]
    for key, model in result["models"].items():
        fused = model.get("candidates", {}).get("int8", {})
        x86 = (model.get("x86") or {}).get("bundles", {}).get("int8", {})
        qemu = (model.get("qemu") or {}).get("bundles", {}).get("int8", {})
        f32 = model.get("candidates", {}).get("float32", {}).get("bundle_bytes")
        if "bundle_bytes" not in fused or not f32 or "errors" not in x86:
            out.append(f"- {MODELS[key][0]}: int8 not measured.")
            continue
        e = x86["errors"]
        out.append(
            f"- {MODELS[key][0]}: int8 (fused) is {fused['bundle_bytes'] / f32:.2f}x float32's "
            f"size; vs Keras {e['held']['mae']:.2f} % / {e['held']['max']:.2f} % held-out, "
            f"{e['shift2']['mae']:.2f} % / {e['shift2']['max']:.2f} % at +2 std; "
            f"{x86.get('ratio', float('nan')):.2f}x float32's time on x86, "
            f"{qemu.get('ratio', float('nan')):.2f}x under QEMU arm64 (emulated)."
        )
    return [*out, ""]
