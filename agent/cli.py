"""``sensorcast`` command line: run, check, info, bench, demo, and the build-time commands.

The only place that configures logging and turns errors into exit codes.
``convert`` is dispatched to the ``convert`` package on demand, so the agent's
own commands never import it or TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Optional

from sensorcast.agent import __version__
from sensorcast.agent.errors import ConfigError, SensorcastError

__all__ = ["main"]

logger = logging.getLogger("sensorcast")

EXIT_ERROR = 1
EXIT_USAGE = 2
#: The reader of stdout went away: 128 + SIGPIPE, what a shell reports for `yes | head`, so
#: `set -o pipefail` scripts see a cut-short `info` as they see any cut-short command.
EXIT_BROKEN_PIPE = 141

#: Subcommands handled by the build-time package, with their help lines.
BUILD_TIME = {
    "convert": "convert a Keras model into a bundle (needs the [convert] extra)",
    "train": "train an LSTM forecaster on a CSV (needs the [convert] extra)",
    "evaluate": "a model's errors on the test split against naive baselines, and a plot",
    "norm": "write norm.json from a CSV's training rows or a fitted scikit-learn scaler",
}
FLEET_HELP = "a fleet of devices on one broker: status, and model rollouts in waves"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sensorcast",
        description="Forecast sensor time series on the device and publish them to MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"sensorcast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent")
    run.add_argument("--config", "-c", type=Path, required=True, help="TOML config file")
    run.add_argument("--runtime", help="force an interpreter: litert, tflite-runtime, tensorflow")

    check = sub.add_parser("check", help="validate a config and that each model fits its stream")
    check.add_argument("--config", "-c", type=Path, required=True, help="TOML config file")
    check.add_argument("--runtime", help="force an interpreter: litert, tflite-runtime, tensorflow")

    health = sub.add_parser(
        "health", help="exit 0 if the agent running with this config is healthy, else 1"
    )
    health.add_argument("--config", "-c", type=Path, required=True, help="TOML config file")
    health.add_argument(
        "--max-age",
        type=float,
        default=30.0,
        help="seconds without a sign of life (or without the broker) that count as unhealthy",
    )

    promote = sub.add_parser(
        "promote", help="make a stream's shadow model its live model (the old kept as .previous)"
    )
    promote.add_argument("--config", "-c", type=Path, required=True, help="TOML config file")
    promote.add_argument("stream", help="the stream whose shadow becomes live")
    promote.add_argument(
        "--runtime", help="force an interpreter: litert, tflite-runtime, tensorflow"
    )

    info = sub.add_parser("info", help="print a model bundle's manifest")
    info.add_argument("model", type=Path, help="bundle (.tflite) made by sensorcast convert")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.add_argument(
        "--max-bytes",
        type=_max_bytes,
        default=None,
        metavar="N",
        help="refuse a file larger than N bytes without reading it (default 64 MiB)",
    )

    demo = sub.add_parser("demo", help="run the agent on the shipped model and show forecasts")
    demo.add_argument("--broker", choices=("auto", "mosquitto", "embedded"), default="auto")
    demo.add_argument("--forecasts", type=int, default=5, help="stop after this many forecasts")

    bench = sub.add_parser("bench", help="time bundles on this device: latency percentiles, RSS")
    bench.add_argument("models", type=Path, nargs="+", help="bundles (.tflite), one per mode")
    bench.add_argument("--runtime", help="force an interpreter: litert, tflite-runtime, tensorflow")
    bench.add_argument("--threads", help="comma-separated thread counts (default 1,2,4 up to CPUs)")
    bench.add_argument("--iterations", type=int, default=1000, help="timed calls per cell")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")

    for name, text in BUILD_TIME.items():
        sub.add_parser(name, help=text, add_help=False)
    sub.add_parser("fleet", help=FLEET_HELP, add_help=False)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; returns the process exit code.

    A reader that goes away early (``sensorcast info FILE | head``) ends the command with
    :data:`EXIT_BROKEN_PIPE` and no traceback, the way the Python docs' note on SIGPIPE says:
    flush inside the ``try``, then point stdout at /dev/null so the interpreter's own flush
    at exit does not fail again.
    """
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


def _main(argv: Optional[list[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in BUILD_TIME:
        return _build_time(argv[0], argv[1:])
    if argv and argv[0] == "fleet":  # its own parser: status, rollout
        from sensorcast.agent.fleet.cli import main as fleet_main

        _configure_logging("INFO")
        return fleet_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return EXIT_USAGE
    _configure_logging("INFO")
    command = _COMMANDS.get(args.command)
    if command is None:  # a build-time name argparse accepted, but not first: not ours
        return EXIT_USAGE
    try:
        return command(args)
    except ConfigError as exc:
        return _fail(exc, EXIT_USAGE)
    except SensorcastError as exc:
        return _fail(exc, EXIT_ERROR)
    except KeyboardInterrupt:
        return 130


def _fail(exc: BaseException, code: int) -> int:
    print(f"sensorcast: error: {exc}", file=sys.stderr)
    return code


def _configure_logging(level: str) -> None:
    """Log to stderr at ``level`` (debug, info, warning, error); call again once the config
    says its ``[log] level`` (basicConfig alone would keep the first level)."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger().setLevel(getattr(logging, level.upper()))


def _run(args: argparse.Namespace) -> int:
    from sensorcast.agent.config import load_config
    from sensorcast.agent.forecast.runtime import load_runtime
    from sensorcast.agent.service import Service

    cfg = load_config(args.config)
    logging.getLogger().setLevel(cfg.log_level.upper())
    service = Service(cfg, load_runtime(args.runtime))
    service.install_signal_handlers()
    service.run()
    return 0


def _check(args: argparse.Namespace) -> int:
    from sensorcast.agent.config import config_warnings, load_config
    from sensorcast.agent.config.mqtt import broker_urls
    from sensorcast.agent.control.ha_units import check_units
    from sensorcast.agent.describe import describe_inputs
    from sensorcast.agent.forecast.runtime import load_runtime
    from sensorcast.agent.streams import load_streams

    cfg = load_config(args.config)
    _configure_logging(cfg.log_level)
    logger.debug("config %s: %d streams, log level %s", cfg.path, len(cfg.streams), cfg.log_level)
    runtime = load_runtime(args.runtime)
    streams = load_streams(cfg, runtime)
    # units Home Assistant would reject for the device class discovery announces
    check_units(cfg, [(s.cfg.name, s.bundle.manifest) for s in streams])
    urls = broker_urls(cfg.mqtt)
    brokers = f"brokers {', '.join(urls)}" if len(urls) > 1 else f"broker {cfg.mqtt.url}"
    print(f"config {cfg.path}: ok (device {cfg.device.id}, {brokers})")
    for s in streams:
        m = s.bundle.manifest
        print(
            f"  stream {s.cfg.name}: {s.bundle.label} {m.quantization}, "
            f"window {m.window} x {m.period_s:g} s of {', '.join(m.features)} -> "
            f"{m.horizon} steps of {', '.join(m.targets)}; {describe_inputs(s.cfg, m)}"
        )
        logger.debug("stream %s: model %s (sha256 %s)", s.cfg.name, s.cfg.model, s.bundle.sha256)
    print(f"  runtime: {runtime.name} {runtime.version}")
    for warning in config_warnings(cfg):
        print(f"  WARNING: {warning}")
    return 0


def _health(args: argparse.Namespace) -> int:
    from sensorcast.agent.config import load_config
    from sensorcast.agent.telemetry.health import check_health, health_path

    cfg = load_config(args.config)
    ok, reason = check_health(health_path(cfg.state_dir, cfg.device.id), args.max_age)
    print(reason, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else EXIT_ERROR


def _promote(args: argparse.Namespace) -> int:
    from sensorcast.agent.config import load_config
    from sensorcast.agent.control.promote import find_stream, promote
    from sensorcast.agent.forecast.runtime import load_runtime
    from sensorcast.agent.streams import load_model

    cfg = load_config(args.config)
    _configure_logging("WARNING")  # the one line below says what happened
    sc, most = find_stream(cfg, args.stream), cfg.models.max_bytes
    runtime = load_runtime(args.runtime)
    done = promote(sc, lambda c: load_model(c, runtime, most)[0], most)
    kept = f"{done.previous} kept as {sc.model.name}.previous" if done.previous else "no .previous"
    print(
        f"stream {done.stream}: {done.label} is now live ({kept}; shadow "
        f"{'consumed' if done.consumed else 'file left in place'}); a running agent swaps it "
        "in within 2 s (or at once on SIGHUP)"
    )
    return 0


def _max_bytes(text: str) -> int:
    """``--max-bytes``: a positive whole number of bytes."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of bytes")
    return value


def _info(args: argparse.Namespace) -> int:
    from sensorcast.agent.describe import describe_bundle
    from sensorcast.agent.forecast.manifest import DEFAULT_MAX_BUNDLE_BYTES, read_bundle

    bundle = read_bundle(args.model, args.max_bytes or DEFAULT_MAX_BUNDLE_BYTES)
    if args.json:
        data = json.loads(bundle.manifest.to_json())
        data["sha256"] = bundle.sha256
        data["size_bytes"] = len(bundle.model)
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    print("\n".join(describe_bundle(bundle)))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from sensorcast.agent.bench import main_bench

    threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    return main_bench(args.models, args.runtime, threads, args.iterations, as_json=args.json)


def _demo(args: argparse.Namespace) -> int:
    from sensorcast.agent.demo import run_demo

    return run_demo(broker=args.broker, forecasts=args.forecasts)


def _build_time(command: str, argv: list[str]) -> int:
    """The workstation commands live in the ``convert`` package (TensorFlow, imported lazily:
    ``evaluate`` on a bundle needs none)."""
    module_name = "sensorcast.convert." + {"convert": "cli"}.get(command, command)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(
            f"sensorcast: error: {command} needs the [convert] extra ({exc}); "
            "install it with: pip install 'sensorcast[convert]'",
            file=sys.stderr,
        )
        return EXIT_ERROR
    code: int = module.main(argv)
    return code


#: The agent's own subcommands (every ``COMMAND`` of :func:`_parser` but the build-time ones).
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _run,
    "check": _check,
    "info": _info,
    "health": _health,
    "promote": _promote,
    "bench": _bench,
    "demo": _demo,
}
