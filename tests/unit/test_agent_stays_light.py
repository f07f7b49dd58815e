"""The agent never imports TensorFlow or the converter."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

HEAVY = ("tensorflow", "keras", "tf_keras", "convert")


def test_no_agent_module_imports_tensorflow_or_convert() -> None:
    offenders = []
    for path in sorted((REPO / "agent").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in HEAVY:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert offenders == []


def test_running_the_agent_commands_loads_no_heavy_module(demo_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[[streams]]\nname = "room"\nmodel = "{demo_dir / "room.tflite"}"\ninput_topic = "x"\n'
    )
    # Runtime forced to LiteRT: tensorflow.lite is the last fallback and would import TF.
    code = f"""
import sys, json, contextlib, io
from agent.cli import main
import agent.service, agent.demo, agent.window, agent.forecast, agent.publish
with contextlib.redirect_stdout(io.StringIO()):
    assert main(["check", "--config", {str(config)!r}, "--runtime", "litert"]) == 0
    assert main(["info", {str(demo_dir / "room.tflite")!r}]) == 0
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
