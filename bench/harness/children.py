"""Benchmarks in child processes: a JSON spec in, a JSON result out.

Each measurement runs in a fresh process so that imports, allocations and the other
measurements' state cannot leak into it, and so that it can run under another Python (the
tflite-runtime venv) or under QEMU. The child is the benchmark's entry script called as
``SCRIPT --child KIND SPEC.json``; it writes its result to the file named by the spec's
``result`` key (:func:`child_main`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = ["ChildFn", "Runner", "Where", "child_main"]

#: A child's entry point: its spec in, its JSON-able result out.
ChildFn = Callable[[dict[str, Any]], dict[str, Any]]


def child_main(table: Mapping[str, ChildFn], kind: str, spec_path: str) -> int:
    """In the child: run ``table[kind]`` on the spec and write its result where it says."""
    spec = json.loads(Path(spec_path).read_text())
    result = table[kind](spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


@dataclass(frozen=True)
class Where:
    """A child run inside a wrapper (QEMU's ``deploy/qemu/run``) that sees ``host`` as ``inner``.

    ``prefix`` is the wrapper's command line up to the child's Python; ``script`` is the entry
    script's path inside.
    """

    prefix: tuple[str, ...]
    host: Path
    inner: str
    script: str


class Runner:
    """Runs children and keeps a list of what failed (for the results file).

    ``script`` is the entry script the children run; ``tail`` how many lines of a failed
    child's stderr its failure keeps. Each child's stderr is kept next to its spec.
    """

    def __init__(
        self,
        work: Path,
        script: Path,
        env: Optional[dict[str, str]] = None,
        cwd: Optional[Path] = None,
        timeout_s: float = 900,
        tail: int = 3,
    ) -> None:
        self.work = work
        self.script = script
        self.env = env
        self.cwd = cwd
        self.timeout_s = timeout_s
        self.tail = tail
        self.count = 0
        self.failures: list[str] = []

    def result(
        self,
        kind: str,
        spec: dict[str, Any],
        python: str = sys.executable,
        timeout_s: Optional[float] = None,
        where: Optional[Where] = None,
        tag: Optional[str] = None,
        work: Optional[Path] = None,
    ) -> dict[str, Any]:
        """Run one child; its result, or ``{"error": why}`` (also kept in :attr:`failures`).

        ``work`` is the directory for its spec, result and stderr (default the runner's).
        A result carries ``seconds`` (wall time of the child) unless it set one itself.
        """
        self.count += 1
        name = tag or f"{kind}-{self.count}"
        base = where.host if where else (work or self.work)
        spec_file, result = base / f"{name}.spec.json", base / f"{name}.result.json"
        inside = (lambda p: f"{where.inner}/{p.name}") if where else str
        spec_file.write_text(json.dumps({**spec, "result": inside(result)}))
        script = where.script if where else str(self.script)
        cmd: Sequence[str] = [
            *(where.prefix if where else ()),
            *(python, script, "--child", kind, inside(spec_file)),
        ]
        label = f"{kind} {spec.get('label', '')}".strip()
        print(f"  {label} ...", flush=True)
        limit = timeout_s or self.timeout_s
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=limit, env=self.env, cwd=self.cwd
            )
        except subprocess.TimeoutExpired:
            return self._failed(label, f"timed out after {limit:.0f} s")
        except OSError as exc:
            return self._failed(label, f"could not start: {exc}")
        seconds = time.monotonic() - started
        (base / f"{name}.stderr.txt").write_text(proc.stderr)
        if proc.returncode < 0:
            return self._failed(label, f"crashed ({signal.Signals(-proc.returncode).name})")
        if proc.returncode != 0 or not result.exists():
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            why = " | ".join(lines[-self.tail :]) or f"exit code {proc.returncode}"
            return self._failed(label, why[-400:])
        data: dict[str, Any] = json.loads(result.read_text())
        data.setdefault("seconds", seconds)
        return data

    def child(self, kind: str, spec: dict[str, Any], **kw: Any) -> Optional[dict[str, Any]]:
        """:meth:`result`, but None when the child failed."""
        data = self.result(kind, spec, **kw)
        return None if "error" in data else data

    def _failed(self, label: str, why: str) -> dict[str, Any]:
        self.failures.append(f"{label}: {why}")
        return {"error": why}
