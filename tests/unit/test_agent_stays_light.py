"""The agent never imports TensorFlow or the converter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.configs import agent_config, topic_stream

#: Top-level names the agent must never load; ``sensorcast.convert`` is checked in full.
HEAVY = ("tensorflow", "keras", "tf_keras")


def test_running_the_agent_commands_loads_no_heavy_module(demo_dir: Path, tmp_path: Path) -> None:
    config = agent_config(
        tmp_path, streams=[topic_stream(demo_dir / "room.tflite", "x")], name="c.toml"
    )
    # Runtime forced to LiteRT: tensorflow.lite is the last fallback and would import TF.
    code = f"""
import sys, json, contextlib, io
from sensorcast.agent.cli import main
import sensorcast.agent.service, sensorcast.agent.demo, sensorcast.agent.window
import sensorcast.agent.forecast.forecaster, sensorcast.agent.publish.payload
with contextlib.redirect_stdout(io.StringIO()):
    assert main(["check", "--config", {str(config)!r}, "--runtime", "litert"]) == 0
    assert main(["info", {str(demo_dir / "room.tflite")!r}]) == 0
print(json.dumps(sorted(m for m in sys.modules
    if m.split(".")[0] in {HEAVY!r} or m.startswith("sensorcast.convert"))))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
