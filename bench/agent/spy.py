"""py-spy on a running agent: record its stacks, and split them into the stages of a
forecast's whole path (``python -m bench.agent.many --profile``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["STAGES", "record", "stage_split"]


def record(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy (beside this Python) sampling ``pid`` 1,000 times a second for ``seconds``,
    its raw stacks to ``out``; the caller waits for it."""
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "--pid", str(pid), "--rate", "1000", "--format", "raw",
           "--duration", str(int(seconds)), "--nonblocking", "-o", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


#: Stages of a py-spy stack (frames are ``Class.function (file:line)``), first match wins:
#: the model, the outbox and the payload wherever they are called from, then the loop turn's
#: own steps.
STAGES = (
    ("model (set_tensor, invoke, get_tensor)", ("Forecaster.predict",)),
    ("outbox: put, commit, pending, delete", ("Outbox.",)),
    ("PUBACK read, matched, acked", ("_handle_pubackcomp", "OutboxSender._acked", "_on_publish")),
    ("payload, quality, band, anomaly, trust", ("Pipeline._publish",)),
    ("reading in: paho handles the PUBLISH, parse", ("_handle_publish",)),
    ("ingest: inbox, window add", ("Inbox.drain ", "Pipeline.ingest ")),
    ("periods closing (tick)", ("Pipeline.tick ",)),
    ("paho publish (building and queueing the packet)", ("MqttLink.publish ",)),
    ("paho writes (flush)", ("loop_write", "WriteBatch.")),
    ("poll: select, paho reading packets (a recv() per header byte)", ("MqttLink.poll ",)),
    ("the loop: heartbeat, jobs, wakeups, glue", ("Service.",)),
)


def stage_split(raw: Path) -> dict[str, float]:
    """Share of the samples per stage (:data:`STAGES`, the rest as ``other``)."""
    counts: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        name = next((s for s, keys in STAGES if any(k in stack for k in keys)), "other")
        counts[name] = counts.get(name, 0) + int(n)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
