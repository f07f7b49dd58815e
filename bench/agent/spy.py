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


#: Stages of a py-spy stack (frames are ``Class.function (file:line)``), first match wins.
STAGES = (
    ("batched forecast (model)", ("Forecaster.predict_batch",)),
    ("outbox put, commit", ("Outbox.put ", "Outbox.commit ", "Outbox.sync ", "Outbox.pending ")),
    ("PUBACK reads, acks", ("_handle_pubackcomp", "OutboxSender._acked", "MqttLink._on_publish")),
    ("readings in (paho, parse, window)", ("_handle_publish", "Inbox.drain ", "Pipeline.ingest ")),
    ("paho publish (queueing)", ("MqttLink.publish ",)),
    ("paho writes (flush)", ("loop_write", "WriteBatch.")),
    ("payloads, quality, trust", ("Pipeline._publish",)),
    ("select, tick, heartbeat, jobs", ("Service.turn", "Service.run")),
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
