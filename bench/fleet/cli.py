"""The fleet benchmark's command: ``bench/run fleet`` or ``python bench/fleet_bench.py``.

1. A real Mosquitto; one real agent publishes its retained messages once (their shapes).
2. A load generator publishes 1,000 simulated devices' retained status, metrics and quality
   reports (3,000 retained messages) in those shapes, and answers model/set as devices do.
3. ``sensorcast fleet status`` (table, ``--json``) over them, as child processes: wall time,
   peak RSS, CPU; the same on an empty prefix (the command's own start-up cost).
4. The rollout's pure decision (``decide``) over the 1,000-device view in this process.
5. ``sensorcast fleet rollout`` over all 1,000 devices in one wave (signed, short soak), and
   one over 1,000 devices of which 30 % have a worse shadow (waves 10,100): it stops.
6. ``fleet status`` over 3,000 devices on a Mosquitto with its default queue per client.

Writes ``--out`` (bench/RESULTS-fleet.md) and ``results.json`` in ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from bench.fleet.measure import cli_run, decision, median_rounds, repeat_cli, step_times
from bench.fleet.report import render
from bench.fleet.shapes import other_bundle, record
from bench.fleet.sim import SimFleet
from bench.harness.broker import Mosquitto
from bench.harness.machine import git_commit, host_summary, packages
from bench.harness.paths import DEMO_DIR, REPO
from bench.harness.proc import rss_mb

__all__ = ["main"]

DEFAULT_OUT = REPO / "bench" / "RESULTS-fleet.md"
#: Mosquitto as a fleet's broker would run it: no per-client queue limit in the way of a
#: controller that subscribes to 3,000 retained messages at once.
BROKER_CONF = (
    "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"
    "max_inflight_messages 0\n"
)


def _pid_of(conf: Path) -> Optional[int]:
    """The broker's pid: the process whose command line names its config file."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(conf).encode() in cmdline and b"mosquitto" in cmdline:
                return int(proc.name)
    return None


def _key(work: Path) -> Path:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    path = work / "rollout.pem"
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return path


def _status(args: argparse.Namespace, url: str, prefix: str) -> dict[str, Any]:
    conn = ["--url", url, "--topic-prefix", prefix]
    out: dict[str, Any] = {}
    out["empty"] = repeat_cli(["status", *conn[:2], "--topic-prefix", "nobody"], args.rounds)
    out["table"] = repeat_cli(["status", *conn], args.rounds)
    out["json"] = repeat_cli(["status", "--json", *conn], args.rounds)
    try:
        doc = json.loads(out["json"]["stdout"])
        out["json_devices"] = len(doc.get("devices", doc)) if isinstance(doc, dict) else len(doc)
    except ValueError:
        out["json_devices"] = None
    out["table_lines"] = len(out["table"]["stdout"].splitlines())
    for run in out.values():
        if isinstance(run, dict):
            run.pop("stdout", None)  # 1,000 rows: the counts say enough
    return out


def _rollout(
    args: argparse.Namespace, broker: Mosquitto, shapes: dict[str, Any], bundle: Path,
    key: Path, work: Path, *, bad_share: float, waves: str,
) -> dict[str, Any]:  # fmt: skip
    """One ``sensorcast fleet rollout`` over a fresh simulated fleet."""
    prefix = f"roll{int(bad_share * 100)}"
    bad = [f"sim-{i:04d}" for i in range(int(args.devices * bad_share))]
    state = work / f"{prefix}.json"
    state.unlink(missing_ok=True)  # a kept --workdir: a new rollout, not the old one resumed
    sim = SimFleet(broker.port, prefix, shapes, args.devices, bad=bad, report_s=args.report)
    try:
        sim.publish_all()
        sim.answer()
        run = cli_run([
            "rollout", str(bundle), "--stream", "room", "--waves", waves, "--soak",
            f"{args.soak}s", "--key", str(key), "--state", str(state),
            "--timeout", "60s", "--json", "--url", f"mqtt://127.0.0.1:{broker.port}",
            "--topic-prefix", prefix,
        ], timeout_s=900, log=work / f"{prefix}.log")  # fmt: skip
    finally:
        sim.close()
    try:
        doc = json.loads(run.pop("stdout"))
        run["summary"] = doc.get("summary")
        run["status"] = doc.get("status")
    except ValueError:
        run["summary"] = None
    run["steps"] = step_times((work / f"{prefix}.log").read_text())
    answers: dict[str, int] = {}
    for dev in sim.devices.values():
        for action, n in dev.answers.items():
            answers[action] = answers.get(action, 0) + n
    run.update(
        devices=args.devices, bad=len(bad), waves=waves, soak_s=args.soak, answers=answers,
        garbage=sim.garbage,
    )  # fmt: skip
    return run


def _default_broker(args: argparse.Namespace, shapes: dict[str, Any]) -> dict[str, Any]:
    """``fleet status --json`` over ``--queue-devices`` devices on a Mosquitto with its default
    queue per client (``max_queued_messages 1000``): how many devices the controller sees,
    and whether it says its view is incomplete."""
    broker = Mosquitto("listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker.start()
    try:
        sim = SimFleet(broker.port, "dflt", shapes, args.queue_devices)
        try:
            sim.publish_all()
        finally:
            sim.close()
        url = f"mqtt://127.0.0.1:{broker.port}"
        run = cli_run(["status", "--json", "--url", url, "--topic-prefix", "dflt"])
    finally:
        broker.close()
    try:
        doc = json.loads(run.pop("stdout"))
    except ValueError:
        doc = {}
    summary = doc.get("summary", {}) if isinstance(doc, dict) else {}
    return {
        "devices": args.queue_devices, "code": run["code"], "wall_s": run["wall_s"],
        "devices_seen": len(doc.get("devices", [])) if isinstance(doc, dict) else None,
        "complete": summary.get("complete") if isinstance(summary, dict) else None,
    }  # fmt: skip


def _measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    broker = Mosquitto(BROKER_CONF)
    broker.start()
    pid = _pid_of(broker.conf)
    r: dict[str, Any] = {"devices": args.devices, "mosquitto": broker.version()}
    try:
        began = time.monotonic()
        shapes = record(DEMO_DIR / "room.tflite", broker.port, work / "recorder")
        r["record_s"] = time.monotonic() - began
        r["sizes"] = {k: len(json.dumps(v)) for k, v in shapes.items() if k != "status"}
        bundle = work / "candidate" / "room.tflite"  # the label: room@<sha12>
        bundle.parent.mkdir(exist_ok=True)
        bundle.write_bytes(other_bundle((DEMO_DIR / "room.tflite").read_bytes()))
        r["bundle_bytes"] = bundle.stat().st_size
        r["broker_rss_idle_mb"] = rss_mb(pid) if pid else None
        sim = SimFleet(broker.port, "bench", shapes, args.devices)
        try:
            r["publish_s"] = sim.publish_all()
        finally:
            sim.close()
        r["broker_rss_mb"] = rss_mb(pid) if pid else None
        r["status"] = _status(args, f"mqtt://127.0.0.1:{broker.port}", "bench")
        r["decision"] = {
            "good": median_rounds([
                decision(shapes, bundle, args.devices, 0.0, work / "plan.json")
                for _ in range(args.rounds)
            ]),
            "good_traced": decision(shapes, bundle, args.devices, 0.0, trace=True),
            "bad": median_rounds([
                decision(shapes, bundle, args.devices, 0.3, work / "plan-bad.json")
                for _ in range(args.rounds)
            ]),
        }  # fmt: skip
        if not args.no_rollout:
            key = _key(work)
            r["rollout_good"] = _rollout(
                args, broker, shapes, bundle, key, work, bad_share=0.0, waves="100"
            )
            r["rollout_bad"] = _rollout(
                args, broker, shapes, bundle, key, work, bad_share=0.3, waves="10,100"
            )
        r["broker_rss_end_mb"] = rss_mb(pid) if pid else None
    finally:
        broker.close()
    r["default_queue"] = _default_broker(args, shapes)
    return r


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark (or re-render it); 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each status command")
    p.add_argument("--soak", type=float, default=3.0, help="rollout soak, seconds (default 3)")
    p.add_argument(
        "--report", type=float, default=2.0,
        help="how often a simulated device with a shadow reports, seconds (default 2)",
    )  # fmt: skip
    p.add_argument(
        "--queue-devices", type=int, default=3000,
        help="devices for the run on a Mosquitto with its default queue (default 3000)",
    )  # fmt: skip
    p.add_argument("--no-rollout", action="store_true", help="skip the two rollout runs")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown results file")
    p.add_argument("--workdir", type=Path, help="keep the work files and results.json here")
    p.add_argument("--render-from", type=Path, help="rewrite --out from a kept results.json")
    args = p.parse_args(argv)
    if args.render_from is not None:
        args.out.write_text(render(json.loads(args.render_from.read_text())))
        return 0
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sensorcast-fleet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    r = _measure(args, work)
    r["elapsed_s"] = time.monotonic() - began
    r["host"] = host_summary()
    r["packages"] = packages(["paho-mqtt", "cryptography", "numpy", "ai-edge-litert"])
    r["commit"] = git_commit(["agent", "bench"])
    r["command"] = " ".join(["bench/run fleet", *(sys.argv[1:] if argv is None else argv)])
    (work / "results.json").write_text(json.dumps(r, indent=1, default=str))
    args.out.write_text(render(r))
    print(f"wrote {args.out} ({r['elapsed_s']:.0f} s); raw results in {work}/results.json")
    return 0
