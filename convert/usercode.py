"""``--import MODULE_OR_FILE``: the user's own code (custom layers, subclassed models),
imported before the model is loaded so Keras knows its classes.

The conversion worker loads the model again in a fresh process, so the imports travel to it
in the environment (:data:`IMPORTS_ENV`) and the worker calls :func:`import_user_code` with
them. Importing runs the user's code: it is their own file on their build machine, as with
``python their_script.py``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType

from sensorcast.convert import ConvertError

__all__ = ["IMPORTS_ENV", "import_user_code", "imported_specs"]

#: Environment variable with the imports (``os.pathsep``-separated: absolute .py paths and
#: module names), set by :func:`import_user_code` and read by the conversion worker.
IMPORTS_ENV = "SENSORCAST_IMPORTS"
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def import_user_code(specs: list[str]) -> None:
    """Import each ``--import`` spec: a dotted module name (the current directory is on the
    path) or a ``.py`` file (imported under a name of its own, registered in ``sys.modules``).

    Keras classes the modules define are registered under their Keras name (the decorator's,
    else the class name), so a model saved with undecorated classes loads too. Records the
    imports in :data:`IMPORTS_ENV` for the worker (cleared when ``specs`` is empty, so one
    conversion's imports never leak into the next in the same process). Raises
    :class:`ConvertError` for a missing file or module, or an error raised while importing.
    """
    if not specs:
        os.environ.pop(IMPORTS_ENV, None)
        return
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    resolved = []
    for spec in specs:
        if os.pathsep in spec:
            raise ConvertError(f"--import {spec}: give one module or file per --import")
        module, name = _import_one(spec)
        _register_keras_classes(module)
        resolved.append(name)
    os.environ[IMPORTS_ENV] = os.pathsep.join(resolved)


def imported_specs() -> list[str]:
    """What ``--import`` imported in this process (or its parent), for messages."""
    return [s for s in os.environ.get(IMPORTS_ENV, "").split(os.pathsep) if s]


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or (os.altsep or os.sep) in spec


def _import_one(spec: str) -> tuple[ModuleType, str]:
    """Import one spec; returns the module and how the worker finds it again."""
    if _is_file(spec):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise ConvertError(f"--import {spec}: file not found")
        return _import_file(spec, path), str(path)
    if not _MODULE_NAME.fullmatch(spec):
        raise ConvertError(f"--import {spec}: not a module name (a.b.c) or a .py file")
    try:
        found = importlib.util.find_spec(spec)
    except (ImportError, ValueError):  # a parent package is missing
        found = None
    if found is None:
        raise ConvertError(
            f"--import {spec}: no module {spec!r} on the Python path or in the current "
            f"directory ({os.getcwd()}); give the .py file's path instead"
        )
    try:
        return importlib.import_module(spec), spec
    except Exception as exc:  # the user's code may raise anything while it runs
        raise _import_error(spec, exc) from exc


def _import_file(spec: str, path: Path) -> ModuleType:
    # A name of its own per file, so two files both called layers.py do not collide, and
    # registered in sys.modules first, as `import` does (dataclasses and pickling look there).
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"sensorcast_user_{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConvertError(f"--import {spec}: Python cannot import this file; give a .py file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    # Like `python path/file.py`: the file's own directory is on the path for its imports.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        loader_spec.loader.exec_module(module)
    except BaseException as exc:  # SystemExit from a script's sys.exit() too
        del sys.modules[name]
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _import_error(spec, exc) from exc
    return module


def _import_error(spec: str, exc: BaseException) -> ConvertError:
    """One line: the exception's last line and where in the user's code it was raised."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    detail = f"{type(exc).__name__}: {lines[-1].strip()}" if lines else type(exc).__name__
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" at {exc.filename}:{exc.lineno}"
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "importlib" not in f.filename]
        where = f" at {ours[-1].filename}:{ours[-1].lineno}" if ours else ""
    return ConvertError(
        f"--import {spec}: importing it raised {detail[:300]}{where}; fix that code, or import "
        "a module that only defines the model's classes (no training at import time)"
    )


def _register_keras_classes(module: ModuleType) -> None:
    """Make the Keras classes ``module`` defines known to Keras by their saved name.

    Keras looks a class up by its registered name; an undecorated class is saved under its
    class name, which only ``custom_objects`` can map back, so it goes there (the public
    ``keras.saving.get_custom_objects`` table) unless something is already under that name.
    """
    import keras

    table = keras.saving.get_custom_objects()
    for value in list(vars(module).values()):
        if (
            isinstance(value, type)
            and issubclass(value, keras.layers.Layer)
            and value.__module__ == module.__name__
        ):
            table.setdefault(keras.saving.get_registered_name(value), value)
