"""One run of the agent benchmark: settings, trees, models, broker, and the results so far."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from bench.agent.trees import Tree
from bench.harness.children import Runner
from bench.harness.paths import DEMO_DIR, REPO, TFLITE_PY

__all__ = ["Run"]

#: The demo's bundle as shipped (dynamic range quantization).
DEMO_BUNDLE = DEMO_DIR / "room.tflite"
#: A float32 demo bundle for tflite-runtime if the bench could not convert one.
DEMO_F32_FALLBACK = REPO / "tests" / "data" / "room_float32.tflite"


@dataclass
class Run:
    """What the questions' ``measure`` functions share; they add to :attr:`r`."""

    work: Path
    runner: Runner
    trees: dict[str, Tree]  #: "before" and "after"
    quick: bool
    port: int = 0  #: the broker's, once started
    prep: dict[str, Any] = field(default_factory=dict)  #: the ``prepare`` child's bundles
    r: dict[str, Any] = field(default_factory=dict)  #: the results (``results.json``)

    @property
    def n(self) -> int:
        """Calls per round of the per-forecast timings."""
        return 1000 if self.quick else 1500

    @property
    def rounds(self) -> int:
        """Timing rounds of a child that runs once (the median is reported)."""
        return 3 if self.quick else 5

    @property
    def turns(self) -> int:
        """How often the before and after children take turns (:meth:`alternate`)."""
        return 2 if self.quick else 3

    #: Timing rounds of each of those children (their rounds are pooled).
    rounds_per_turn = 2

    @property
    def after(self) -> Tree:
        """This checkout's tree."""
        return self.trees["after"]

    @property
    def tflite_python(self) -> Optional[str]:
        """The tflite-runtime venv's Python, if there is one."""
        return str(TFLITE_PY) if TFLITE_PY.exists() else None

    def bundles(self) -> dict[str, Optional[str]]:
        """The two models the agent runs: the demo's as shipped, the LSTM float32."""
        return {"demo": str(DEMO_BUNDLE), "lstm": self.prep.get("lstm_f32")}

    def f32_bundles(self) -> dict[str, Optional[str]]:
        """The two models in float32 (tflite-runtime refuses the dynamic demo bundle)."""
        demo = self.prep.get("demo_f32") or str(DEMO_F32_FALLBACK)
        return {"demo": demo, "lstm": self.prep.get("lstm_f32")}

    def alternate(
        self,
        kind: str,
        specs: dict[str, dict[str, Any]],
        merge: Callable[[list[dict[str, Any]]], dict[str, Any]],
        **kw: Any,
    ) -> dict[str, Optional[dict[str, Any]]]:
        """Run each side's child :attr:`turns` times, the sides taking turns (so a shared
        machine's drifting load hits them alike); per side the ``merge`` of its results.
        ``kw`` go to :meth:`child` (another Python, a wrapper)."""
        got: dict[str, list[dict[str, Any]]] = {side: [] for side in specs}
        for _ in range(self.turns):
            for side, spec in specs.items():
                res = self.child(kind, spec, **kw)
                if res is not None:
                    got[side].append(res)
        return {side: merge(results) if results else None for side, results in got.items()}

    def child(self, kind: str, spec: dict[str, Any], **kw: Any) -> Optional[dict[str, Any]]:
        """Run a child on this host's Python unless told otherwise; None if it failed."""
        kw.setdefault("python", sys.executable)
        return self.runner.child(kind, spec, **kw)
