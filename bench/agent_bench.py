"""Entry script of the agent benchmark (``bench/run``) and of its child processes.

The benchmark itself is the package ``bench.agent``: one module per question on a small
``bench.harness``. Children run this file too (``--child KIND SPEC.json``), also under the
tflite-runtime venv and in the QEMU chroot, where the checkout is ``/src``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a file, Python put bench/ first on sys.path, where bench/agent would pass for
    # the baseline's top-level package `agent`: the checkout goes there instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    from bench.agent.cli import main

    raise SystemExit(main())
