"""``sensorcast fleet rollout BUNDLE``: its flags (:func:`add_rollout_args`, which the fleet
CLI's ``rollout`` subparser is built with) and the command (:func:`run_rollout`)."""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Optional

from sensorcast.agent.errors import ConfigError, ModelError, SensorcastError
from sensorcast.agent.fleet.client import Connection, FleetClient
from sensorcast.agent.fleet.decide import Policy
from sensorcast.agent.fleet.gate import DEFAULT_GATE, METRICS, parse_gate
from sensorcast.agent.fleet.model import Fleet
from sensorcast.agent.fleet.outcome import render_json, render_table
from sensorcast.agent.fleet.plan import DeviceRecord, Plan, load, save
from sensorcast.agent.fleet.rollout import EXIT_CODES, Bundle, Runner
from sensorcast.agent.fleet.signing import load_signature, sign
from sensorcast.agent.fleet.waves import parse_duration, parse_share, parse_waves, split_waves
from sensorcast.agent.forecast.manifest import read_bundle

__all__ = ["EXIT_INCOMPLETE", "add_rollout_args", "run_rollout"]

logger = logging.getLogger(__name__)

EXIT_INCOMPLETE = 3  #: Devices left offline or unanswered: rerun the command to resume them.

_EPILOG = f"""\
gate metrics (each device's shadow-vs-live quality report after the soak):
{chr(10).join(f"  {name:11} {what}" for name, what in METRICS.items())}
default gate: {" ".join(DEFAULT_GATE)}. Always required too: the device stayed online, its
agent did not restart, its shadow is this bundle, enough residuals (mae_ratio not null),
no drift flag on the shadow.

exit codes: 0 promoted everywhere; 1 stopped by the gate (reasons printed); 2 usage or
config error; 3 incomplete (devices offline or unanswered: rerun the same command to resume).
"""


def add_rollout_args(parser: argparse.ArgumentParser) -> None:
    """The ``rollout`` subcommand's own flags (the connection flags are the fleet CLI's)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="the .tflite bundle")
    parser.add_argument("--stream", required=True, help="the stream whose model it replaces")
    parser.add_argument(
        "--waves", default="1,10,50,100",
        help="cumulative percentages of the target devices (default 1,10,50,100); devices "
        "are ordered by the sha256 of their id, so the first wave is the same every time",
    )  # fmt: skip
    parser.add_argument(
        "--soak", default="1h", help="how long each shadow runs before it is judged "
        "(30s, 10m, 1h; default 1h); at least (min_samples + horizon) periods of the "
        "stream, for the shadow to gather its residuals on every step",
    )  # fmt: skip
    parser.add_argument(
        "--gate", action="append", metavar="EXPR",
        help="METRIC OP NUMBER, repeatable, e.g. mae_ratio<=1.05 (see below)",
    )  # fmt: skip
    parser.add_argument(
        "--max-failed", default="0.1", metavar="SHARE",
        help="stop when more than this share of a wave fails (default 0.1; 0: any failure)",
    )  # fmt: skip
    sig = parser.add_mutually_exclusive_group(required=True)
    sig.add_argument("--key", type=Path, metavar="PRIVATE.pem", help="Ed25519 key to sign with")
    sig.add_argument("--signature", metavar="B64|@FILE", help="the bundle's Ed25519 signature")
    sig.add_argument(
        "--unsigned", action="store_true",
        help="send it unsigned (devices refuse it unless their config allows unsigned updates)",
    )  # fmt: skip
    parser.add_argument("--devices", help="only these devices (comma-separated ids)")
    parser.add_argument("--site", help="only the devices of this site ([device] site)")
    parser.add_argument(
        "--state", type=Path, metavar="FILE",
        help="the rollout's state file (default sensorcast-rollout-STREAM-SHA12.json here)",
    )  # fmt: skip
    parser.add_argument(
        "--offline-wait", default="10m", metavar="DURATION",
        help="how long a device may stay offline before it is reported (default 10m)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", default="2m", metavar="DURATION",
        help="for a device's answer to a request, then it is sent again (default 2m)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="the final report as JSON")


def run_rollout(args: argparse.Namespace, conn: Connection) -> int:
    """``sensorcast fleet rollout``; returns the exit code. SIGTERM (systemd, docker stop)
    ends it as Ctrl-C does: the state is saved after every change, a rerun resumes."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args, conn)
    except ConfigError as exc:
        print(f"sensorcast fleet rollout: error: {exc}", flush=True, file=sys.stderr)
        return 2
    except SensorcastError as exc:
        print(f"sensorcast fleet rollout: error: {exc}", flush=True, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        logger.warning("interrupted: the state is saved; rerun the same command to resume")
        return EXIT_INCOMPLETE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, conn: Connection) -> int:
    try:
        bundle = read_bundle(args.bundle)
    except ModelError as exc:
        raise ConfigError(str(exc)) from exc
    policy = Policy(
        gate=[parse_gate(g) for g in (args.gate or DEFAULT_GATE)],
        timeout_s=parse_duration(args.timeout, "--timeout"),
        offline_wait_s=parse_duration(args.offline_wait, "--offline-wait"),
    )
    waves = parse_waves(args.waves)
    soak_s = parse_duration(args.soak, "--soak")
    max_failed = parse_share(args.max_failed, "--max-failed")
    sha12 = bundle.sha256[:12]
    path = args.state or Path(f"sensorcast-rollout-{args.stream}-{sha12}.json")
    plan = load(path)
    if plan is not None:
        _check_same(plan, path, args.stream, bundle.sha256)
        if plan.finished and plan.status != "incomplete":
            logger.info("rollout %s finished before (%s): its report", plan.id, plan.status)
            return _report(plan, args.json)
        asked = (list(waves), soak_s, [str(c) for c in policy.gate], max_failed)
        if asked != (plan.waves, plan.soak_s, plan.gate, plan.max_failed):
            logger.warning(
                "resuming %s with the waves, soak, gate and --max-failed it started with "
                "(the state file's), not this command's", plan.id,
            )  # fmt: skip
        policy = Policy([parse_gate(g) for g in plan.gate], policy.timeout_s,
                        policy.offline_wait_s)  # fmt: skip
    signature = _signature(args, bundle.model)
    with FleetClient(conn) as client:
        client.connect()
        client.watch()
        fleet = client.settle()
        if plan is None and not fleet.complete:
            raise SensorcastError(
                "the broker dropped retained messages on their way here (its queue per client "
                "is full), so the device list is incomplete and no rollout was planned; raise "
                "max_queued_messages (Mosquitto) above devices x streams x 5 and run again"
            )
        if plan is None:
            gate = [str(c) for c in policy.gate]
            plan = _new_plan(args, fleet, bundle.sha256, bundle.label, bundle.manifest.created,
                             waves, soak_s, gate, max_failed, signature is not None)  # fmt: skip
            logger.info(
                "rollout %s: %s to %d devices in %d waves, soak %g s, gate %s; state in %s",
                plan.id, plan.label, len(plan.devices), len(plan.cohorts), soak_s,
                " ".join(plan.gate), path,
            )  # fmt: skip
        else:
            plan.resume()
            logger.info("rollout %s: resumed from %s (%s)", plan.id, path, plan.status)
        save(plan, path)
        runner = Runner(client, plan, path, policy, Bundle(bundle.model, signature), conn.prefix)
        code = runner.run()
    _report(plan, args.json)
    return code


def _report(plan: Plan, as_json: bool) -> int:
    code = EXIT_CODES.get(plan.status, EXIT_INCOMPLETE)
    print(render_json(plan, code) if as_json else render_table(plan), flush=True)
    return code


def _check_same(plan: Plan, path: Path, stream: str, sha256: str) -> None:
    if plan.stream != stream or plan.sha256 != sha256:
        raise ConfigError(
            f"rollout state {path} is for {plan.label} on stream {plan.stream}, not this "
            "bundle and stream; name another file with --state"
        )


def _signature(args: argparse.Namespace, data: bytes) -> Optional[str]:
    if args.key is not None:
        return sign(data, args.key)
    if args.signature is not None:
        return load_signature(args.signature)
    logger.warning(
        "--unsigned: the bundle goes out without a signature; devices refuse it unless "
        "their own config sets updates.allow_unsigned = true"
    )
    return None


def _targets(args: argparse.Namespace, fleet: Fleet) -> list[str]:
    """The devices to roll out to: every one whose retained state shows the stream, or the
    ``--devices`` named (seen or not: an unseen one is reported, never skipped), by site."""
    if args.devices:
        wanted = [d.strip() for d in args.devices.split(",") if d.strip()]
    else:
        wanted = [d.id for d in fleet.devices.values() if args.stream in d.streams]
    if args.site:
        other = [d for d in wanted if d not in fleet.devices or fleet.devices[d].site != args.site]
        if other:
            logger.info("not at site %s, left out: %s", args.site, ", ".join(sorted(other)))
        wanted = [d for d in wanted if d not in set(other)]
    if not wanted:
        raise ConfigError(
            f"no device to roll out to: none shows stream {args.stream!r} under prefix "
            f"{fleet.prefix!r}{' at site ' + repr(args.site) if args.site else ''}; check "
            "--stream, --topic-prefix, --site or --devices"
        )
    return wanted


def _new_plan(
    args: argparse.Namespace, fleet: Fleet, sha256: str, label: str, created: str,
    waves: tuple[float, ...], soak_s: float, gate: list[str], max_failed: float, signed: bool,
) -> Plan:  # fmt: skip
    cohorts = split_waves(_targets(args, fleet), waves)
    now = time.time()
    plan = Plan(
        id=f"{args.stream}-{sha256[:12]}-{secrets.token_hex(3)}", stream=args.stream,
        sha256=sha256, label=label, created=created, waves=list(waves), cohorts=cohorts,
        soak_s=soak_s, gate=gate, max_failed=max_failed, signed=signed, started_at=now,
        updated_at=now,
    )  # fmt: skip
    for wave, cohort in enumerate(cohorts):
        for device in cohort:
            plan.devices[device] = DeviceRecord(device, wave)
    return plan
