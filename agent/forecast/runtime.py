"""Find a TFLite interpreter: LiteRT, then tflite-runtime, then tensorflow.lite.

One function decides, so every part of sensorcast runs bundles the same way.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sensorcast.agent.errors import ModelError

__all__ = ["RUNTIMES", "Runtime", "load_runtime", "release_load_code"]

#: ``madvise`` advice that drops a range's pages from the process (Linux, every arch we run).
_MADV_DONTNEED = 4
#: Per library folder: its code mappings as last seen in ``/proc/self/maps``, and which of
#: them held no modified page then (``/proc/self/smaps``, 7x the read).
_clean_seen: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {}


# (name, module, attribute) in order of preference.
RUNTIMES = (
    ("litert", "ai_edge_litert.interpreter", "Interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter", "Interpreter"),
    # tensorflow.lite is a lazily loaded API module: reach it from the top package.
    ("tensorflow", "tensorflow", "lite.Interpreter"),
)


@dataclass(frozen=True)
class Runtime:
    """An importable interpreter class and where it came from."""

    name: str
    interpreter_class: Callable[..., Any]
    version: str

    def interpreter(self, model: bytes, num_threads: Optional[int] = 1) -> Any:
        """Build an interpreter for ``model`` with tensors allocated."""
        try:
            interp = self.interpreter_class(model_content=model, num_threads=num_threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"the {self.name} interpreter cannot load the model ({exc})") from exc
        if self.name != "tensorflow":  # building it ran code (delegates, kernels) once more
            release_load_code(self.interpreter_class.__module__.split(".")[0])
        return interp


def load_runtime(prefer: Optional[str] = None) -> Runtime:
    """Return the first interpreter that imports.

    ``prefer`` (or the ``SENSORCAST_RUNTIME`` environment variable) names one
    of ``litert``, ``tflite-runtime``, ``tensorflow`` to use only that one.
    """
    wanted = prefer or os.environ.get("SENSORCAST_RUNTIME") or None
    names = [r[0] for r in RUNTIMES]
    if wanted is not None and wanted not in names:
        raise ModelError(f"runtime {wanted!r} is unknown; choose one of {', '.join(names)}")
    problems = []
    for name, module_name, attr in RUNTIMES:
        if wanted is not None and name != wanted:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            problems.append(f"{name}: {exc}")
            continue
        version = _version(module_name.split(".")[0])
        if name != "tensorflow":
            release_load_code(module_name.split(".")[0])
        target: Any = module
        for part in attr.split("."):
            target = getattr(target, part)
        return Runtime(name=name, interpreter_class=target, version=version)
    raise ModelError(
        "no TFLite interpreter could be imported ("
        + "; ".join(problems)
        + "); install one: pip install ai-edge-litert"
    )


def _version(top: str) -> str:
    """The runtime's version: its package's ``__version__`` (all three set it), else its
    distribution's metadata. ``importlib.metadata`` (with zipfile, csv, email parsing) is
    about 1 MB of resident memory a ``run`` has no other use for."""
    own = getattr(sys.modules.get(top), "__version__", None)
    if isinstance(own, str) and own:
        return own
    dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(top, top)
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # metadata missing in odd installs; the version is informative only
        return "unknown"


def release_load_code(top: str) -> int:
    """Unmap the code pages package ``top``'s native libraries touched only while loading.

    LiteRT's library (11 MB of machine code) runs static initializers spread over all of
    it when it is loaded, leaving about 8 MB of code pages in the agent's resident set that
    an interpreter never runs again. Dropping them (``MADV_DONTNEED`` on the library's
    executable mappings, only those with no private copy of a page: never modified, so the
    kernel reads a page back from the file if it runs again) takes them out of the process's
    RSS; the code an invoke runs comes back on its first call. Each call checks in
    ``/proc/self/maps`` (0.2 ms) that the addresses are still that library's code; smaps
    (1.5 ms) is read again only when they are not. Linux only, best effort: the KB of code
    mappings advised (0 where it cannot).
    """
    if not sys.platform.startswith("linux"):
        return 0
    where = getattr(sys.modules.get(top), "__file__", None)
    if not where:
        return 0
    prefix = os.path.dirname(os.path.realpath(where)) + os.sep
    mapped = _code_mappings(prefix)
    seen = _clean_seen.get(prefix)
    if seen is None or seen[0] != mapped:
        seen = _clean_seen[prefix] = (mapped, _clean_code_ranges(prefix))
    ranges = seen[1]
    if not ranges:
        return 0
    try:
        import ctypes

        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    done = 0
    for start, end in ranges:
        if madvise(start, end - start, _MADV_DONTNEED) == 0:
            done += (end - start) // 1024
    return done


def _clean_code_ranges(prefix: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each executable private mapping of a file under ``prefix``
    that holds no private (anonymous) copy of a page (``/proc/self/smaps``).

    ``Anonymous``, not ``Private_Dirty``: a library file written moments ago (an install
    or an image just unpacked) has its pages dirty in the page cache until written back,
    and smaps counts those as dirty although the mapping never changed them."""
    ranges: list[tuple[int, int]] = []
    current: Optional[tuple[int, int]] = None
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:
            for line in smaps:
                head, _, rest = line.partition(" ")
                if "-" in head and not head.endswith(":"):  # a mapping's first line
                    fields = rest.split(maxsplit=4)
                    code = len(fields) == 5 and fields[0] == "r-xp"
                    current = _span(head) if code and fields[4].startswith(prefix) else None
                elif current is not None and head == "Anonymous:":
                    if rest.split()[0] != "0":
                        current = None
                elif current is not None and head == "VmFlags:":
                    ranges.append(current)
                    current = None
    except OSError:
        return []
    return ranges


def _code_mappings(prefix: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each executable private mapping of a file under ``prefix``
    (``/proc/self/maps``: no per-page figures, so a seventh of smaps' cost)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return [
                _span(fields[0])
                for fields in (line.split(maxsplit=5) for line in maps)
                if len(fields) == 6 and fields[1] == "r-xp" and fields[5].startswith(prefix)
            ]
    except OSError:
        return []


def _span(text: str) -> tuple[int, int]:
    start, end = text.split("-")
    return int(start, 16), int(end, 16)
