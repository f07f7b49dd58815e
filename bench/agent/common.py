"""What the agent's questions share: the models, readings, configs, and starting the agent."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Optional

import numpy as np

from bench.agent.trees import Tree, check_env

if TYPE_CHECKING:
    from sensorcast.agent.forecast.manifest import Manifest

__all__ = [
    "LSTM",
    "LSTM_FEATURES",
    "STREAMS",
    "agent_config",
    "manifest",
    "payloads",
    "start_agent",
]

STREAMS = 100  #: streams sharing one model for the batching comparison
LSTM = (64, 48)  #: units, window of the second model
LSTM_FEATURES = ("a", "b", "c")


def manifest(bundle: Path) -> Manifest:
    """A bundle's manifest, read with this checkout's agent (in the parent)."""
    from sensorcast.agent.forecast.manifest import read_bundle

    return read_bundle(bundle).manifest


def payloads(features: list[str], start: float, step: float, n: int, seed: int = 1) -> list[bytes]:
    """``n`` JSON readings (one number per feature) at ``start + i * step`` (s)."""
    rng = np.random.default_rng(seed)
    base = [21.0, 48.0, 3.0][: len(features)] + [0.0] * max(0, len(features) - 3)
    vals = np.asarray(base) + rng.normal(0, 0.5, (n, len(features)))
    out = []
    for i in range(n):
        body = ",".join(f'"{f}":{v:.3f}' for f, v in zip(features, vals[i]))
        out.append(f'{{"ts":{start + i * step:.3f},{body}}}'.encode())
    return out


def agent_config(path: Path, port: int, streams: list[tuple[str, Path, str]], device: str) -> Path:
    """Write a config with replayed-history streams (no wall-clock closing, any timestamp).

    ``streams`` are ``(name, bundle, input topic)``; the state goes next to ``path``, and
    starts empty (a window restored from an earlier run would refuse its replayed readings).
    """
    state = path.parent / f"state-{device}"
    shutil.rmtree(state, ignore_errors=True)
    body = "".join(
        f'[[streams]]\nname = "{name}"\nmodel = "{model}"\ninput_topic = "{topic}"\n'
        "close_delay_s = 1000000000\nmax_future_s = 1000000000\nmax_gap_s = 1000000000\n"
        for name, model, topic in streams
    )
    path.write_text(
        f'[device]\nid = "{device}"\n[state]\ndir = "{state}"\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\n' + body
    )
    return path


def start_agent(
    tree: Tree,
    python: str,
    cfg: Path,
    cpu: Optional[int] = None,
    log: Optional[IO[bytes]] = None,
) -> subprocess.Popen[bytes]:
    """``python -m <package> run --config cfg`` on ``tree``, pinned to ``cpu`` if given."""
    check_env(tree, python)
    cmd = [python, "-m", tree.package, "run", "--config", str(cfg)]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    # cwd away from the checkout: `python -m` puts the cwd first on sys.path
    return subprocess.Popen(
        cmd,
        env=tree.env(),
        stdin=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
        stdout=log or subprocess.DEVNULL,
        stderr=log or subprocess.STDOUT,
    )
