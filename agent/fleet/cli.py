"""``sensorcast fleet status`` and ``sensorcast fleet rollout``: the parser, the broker
connection flags both share, and the exit codes (0 done, 1 a SensorcastError such as a broker
that cannot be reached, 2 a usage or config error; one line on stderr, no traceback).

The rollout's own flags and run come from :mod:`sensorcast.agent.fleet.rollout_cli`, imported
only when ``rollout`` is asked for: ``status`` never depends on it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sensorcast.agent.errors import ConfigError, SensorcastError

if TYPE_CHECKING:
    from sensorcast.agent.fleet.client import Connection

__all__ = ["add_connection_args", "connection", "main", "parser"]

EXIT_ERROR = 1
EXIT_USAGE = 2
DEFAULT_URL = "mqtt://127.0.0.1:1883"
_ROLLOUT_MODULE = "sensorcast.agent.fleet.rollout_cli"
_NO_ROLLOUT = (
    f"rollout is not part of this install ({_ROLLOUT_MODULE} is missing); "
    "install a sensorcast that has it"
)


def main(argv: Optional[list[str]] = None) -> int:
    """``sensorcast fleet ARGS``; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser(with_rollout=bool(args_list) and args_list[0] == "rollout").parse_args(
            args_list
        )
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, said on stderr)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except ConfigError as exc:
        return _fail(exc, EXIT_USAGE)
    run = getattr(args, "run", None)
    if run is None:
        parser(with_rollout=False).print_help(sys.stderr)
        return EXIT_USAGE
    if run is _no_rollout:  # nothing to connect for
        return _fail(ConfigError(_NO_ROLLOUT), EXIT_USAGE)
    try:
        return int(run(args, connection(args)))
    except ConfigError as exc:
        return _fail(exc, EXIT_USAGE)
    except SensorcastError as exc:
        return _fail(exc, EXIT_ERROR)
    except KeyboardInterrupt:
        return 130


def _fail(exc: BaseException, code: int) -> int:
    print(f"sensorcast fleet: error: {exc}", file=sys.stderr)
    return code


def parser(with_rollout: bool = True) -> argparse.ArgumentParser:
    """The ``sensorcast fleet`` parser; ``with_rollout``: build ``rollout``'s flags (imports
    its module; without it ``rollout`` takes any arguments and says it is missing)."""
    from sensorcast.agent.fleet.status import add_status_args, run_status

    top = argparse.ArgumentParser(
        prog="sensorcast fleet",
        description="A fleet of devices on one MQTT broker: their state, and model rollouts.",
    )
    sub = top.add_subparsers(dest="command", metavar="{status,rollout}")
    status = sub.add_parser("status", help="every device, its streams' models and forecast quality")
    add_status_args(status)
    add_connection_args(status)
    status.set_defaults(run=run_status)
    help_text = "roll a bundle out in waves, gated on each device's forecast quality"
    if with_rollout:
        _rollout_parser(sub, help_text)
    else:
        sub.add_parser("rollout", help=help_text, add_help=False)
    return top


def _rollout_parser(sub: Any, text: str) -> None:
    try:
        from sensorcast.agent.fleet.rollout_cli import add_rollout_args, run_rollout
    except ModuleNotFoundError as exc:
        if exc.name != _ROLLOUT_MODULE:
            raise  # a dependency of it is missing: its own message says which
        missing = sub.add_parser("rollout", help=text, add_help=False)
        missing.add_argument("rest", nargs=argparse.REMAINDER)
        missing.set_defaults(run=_no_rollout)
        return
    rollout = sub.add_parser("rollout", help=text)
    add_rollout_args(rollout)
    add_connection_args(rollout)
    rollout.set_defaults(run=run_rollout)


def _no_rollout(_args: argparse.Namespace, _conn: Connection) -> int:
    raise ConfigError(_NO_ROLLOUT)


def add_connection_args(
    parser: argparse.ArgumentParser, env: Optional[Mapping[str, str]] = None
) -> None:
    """The broker flags every subcommand shares (defaults from the environment)."""
    env = os.environ if env is None else env
    g = parser.add_argument_group("broker")
    g.add_argument(
        "--url", action="append", metavar="URL",
        help="mqtt://HOST[:PORT] or mqtts://; repeat for a cluster, tried in order (default: "
        f"$SENSORCAST_MQTT_URL, comma-separated, or {DEFAULT_URL})",
    )  # fmt: skip
    g.add_argument(
        "--topic-prefix", default="sensorcast", metavar="PREFIX",
        help="the devices' mqtt.topic_prefix (default sensorcast)",
    )  # fmt: skip
    g.add_argument(
        "--username", default=env.get("SENSORCAST_MQTT_USERNAME") or None,
        help="broker user (default $SENSORCAST_MQTT_USERNAME)",
    )  # fmt: skip
    g.add_argument(
        "--password-file", type=Path, metavar="FILE",
        help="file whose first line is the password (default: $SENSORCAST_MQTT_PASSWORD)",
    )  # fmt: skip
    g.add_argument("--ca-file", type=Path, metavar="FILE", help="TLS: CA certificate (PEM)")
    g.add_argument("--cert-file", type=Path, metavar="FILE", help="TLS: client certificate")
    g.add_argument("--key-file", type=Path, metavar="FILE", help="TLS: client key")
    g.add_argument(
        "--client-id", metavar="ID", help="MQTT client id (default sensorcast-fleet-HOST-PID)"
    )


def connection(args: argparse.Namespace, env: Optional[Mapping[str, str]] = None) -> Connection:
    """The :class:`~sensorcast.agent.fleet.client.Connection` the flags (and the environment)
    describe; a ConfigError (one line) for a bad one."""
    from sensorcast.agent.fleet.client import Connection, parse_url

    env = os.environ if env is None else env
    urls = tuple(args.url or _split(env.get("SENSORCAST_MQTT_URL", "")) or (DEFAULT_URL,))
    tls = False
    for url in urls:
        tls = parse_url(url)[2] or tls
    prefix = args.topic_prefix
    if not prefix or any(ch in prefix for ch in "#+") or prefix.endswith("/"):
        raise ConfigError(f"--topic-prefix {prefix!r}: non-empty, no '#', '+' or trailing '/'")
    if args.client_id is not None and (
        not args.client_id or any(c in args.client_id for c in "+#/")
    ):
        raise ConfigError(f"--client-id {args.client_id!r}: non-empty, without '+', '#' or '/'")
    password = _password(args.password_file, env)
    if password is not None and args.username is None:
        raise ConfigError("--username: required with a password (--password-file)")
    for flag, path in (("--ca-file", args.ca_file), ("--cert-file", args.cert_file),
                       ("--key-file", args.key_file)):  # fmt: skip
        if path is not None and not tls:
            raise ConfigError(f"{flag}: TLS files need an mqtts:// --url")
        if path is not None and not path.is_file():
            raise ConfigError(f"{flag} {path}: no such file")
    if (args.cert_file is None) != (args.key_file is None):
        raise ConfigError("--cert-file/--key-file: give both for a client certificate")
    return Connection(
        urls=urls, prefix=prefix, username=args.username, password=password,
        ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
        client_id=args.client_id,
    )  # fmt: skip


def _split(text: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[\s,]+", text) if part)


def _password(path: Optional[Path], env: Mapping[str, str]) -> Optional[str]:
    if path is None:
        return env.get("SENSORCAST_MQTT_PASSWORD") or None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--password-file {path}: cannot read it ({exc})") from None
    if not lines or not lines[0]:
        raise ConfigError(f"--password-file {path}: empty; put the password on its first line")
    return lines[0]
