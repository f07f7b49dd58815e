"""The shapes of the retained messages a real agent publishes, recorded from one at run time,
so the simulated devices' messages are the agent's own (not a copy that drifts from it).

One ``sensorcast run`` with the demo bundle live and a copy of it as the shadow, fed the demo
room's readings on stdin (replayed history: every window closes at once), publishes its
status, metrics and quality report (with the shadow's section) on the bench's broker.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from sensorcast.agent.forecast.manifest import read_manifest_bytes

from bench.harness.paths import DEMO_DIR

__all__ = ["other_bundle", "record"]

PREFIX = "rec"
DEVICE = "rec-0"
START = 1_700_000_000


def _config(work: Path, bundle: Path, port: int) -> Path:
    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    data = bundle.read_bytes()
    (models / "room.tflite").write_bytes(data)
    (models / "room.tflite.shadow").write_bytes(other_bundle(data))
    config = work / "agent.toml"
    config.write_text(
        f'[device]\nid = "{DEVICE}"\nsite = "site-0"\n[state]\ndir = "{work / "state"}"\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\ntopic_prefix = "{PREFIX}"\n'
        "[homeassistant]\nenabled = false\n[quality]\ninterval_s = 1\nmin_samples = 10\n"
        '[metrics]\ninterval_s = 1\n[[streams]]\nname = "room"\nmodel = "models/room.tflite"\n'
        '[[streams.sources]]\ntype = "stdin"\n'
    )
    return config


def other_bundle(data: bytes) -> bytes:
    """The same model in another bundle (its manifest's ``created`` a second later, the same
    length): another sha256 and label, as a retrained model would have."""
    manifest = read_manifest_bytes(data)
    if manifest is None:
        raise RuntimeError("the demo bundle has no manifest")
    start = manifest.index(b'"created": "') + len(b'"created": "')
    digit = manifest[start + 18 : start + 19]  # the last digit of the seconds
    changed = manifest[: start + 18] + (b"1" if digit == b"0" else b"0") + manifest[start + 19 :]
    return data.replace(manifest, changed)


def _complete(got: dict[str, bytes]) -> bool:
    """Every message recorded, the quality one with a shadow section that compares."""
    quality = got.get(f"{PREFIX}/{DEVICE}/room/quality")
    if quality is None or f"{PREFIX}/{DEVICE}/metrics" not in got:
        return False
    shadow = json.loads(quality).get("shadow")
    return isinstance(shadow, dict) and shadow.get("mae_ratio") is not None


def _collect(port: int, got: dict[str, bytes], cond: threading.Condition) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        with cond:
            got[msg.topic] = bytes(msg.payload)
            cond.notify_all()

    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(f"{PREFIX}/{DEVICE}/#", qos=1)
    client.loop_start()
    return client


def record(bundle: Path, port: int, work: Path, timeout_s: float = 60) -> dict[str, Any]:
    """``{"status": text, "metrics": {...}, "quality": {...}}`` as the agent published them."""
    shutil.rmtree(work, ignore_errors=True)  # a kept --workdir: no warm restart from before
    config = _config(work, bundle, port)
    rows = np.loadtxt(DEMO_DIR / "room-30d.csv", delimiter=",", skiprows=1)[:200, 1:]
    period = 300.0
    lines = [
        json.dumps({"ts": START + i * period, "temperature": t, "humidity": h}) + "\n"
        for i, (t, h) in enumerate(rows.tolist())
    ]
    got: dict[str, bytes] = {}
    cond = threading.Condition()
    client = _collect(port, got, cond)
    with (work / "agent.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sensorcast.agent", "run", "--config", str(config)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
    try:
        assert proc.stdin is not None
        # The quality report goes out with an actual once interval_s passed: a burst to fill
        # the windows, then a reading at a time until the shadow's report compares.
        proc.stdin.write("".join(lines[:60]))
        proc.stdin.flush()
        end = time.monotonic() + timeout_s
        done = False
        for line in lines[60:]:
            proc.stdin.write(line)
            proc.stdin.flush()
            with cond:
                done = cond.wait_for(lambda: _complete(got), 0.1)
            if done or time.monotonic() > end:
                break
        time.sleep(1.5)  # one more metrics snapshot, now with the shadow's ratio
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        client.loop_stop()
        client.disconnect()
    if not done:
        tail = (work / "agent.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the recording agent published no shadow quality report:\n{tail}")
    return {
        "status": "online",
        "metrics": json.loads(got[f"{PREFIX}/{DEVICE}/metrics"]),
        "quality": json.loads(got[f"{PREFIX}/{DEVICE}/room/quality"]),
    }
