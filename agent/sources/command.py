"""Readings printed by a command run on a schedule."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Optional

from sensorcast.agent.errors import ConfigError, SourceError
from sensorcast.agent.sources.base import Reading, ReadingSink, SourceContext
from sensorcast.agent.sources.parse import parse_json_reading, parse_number
from sensorcast.agent.sources.poll import DEFAULT_INTERVAL_S, DEFAULT_MAX_BACKOFF_S, PolledSource
from sensorcast.agent.sources.spec import SecretValue, SourceConfig, SourceTable

__all__ = ["DEFAULT_TIMEOUT_S", "FORMATS", "SECRET_ENV", "CommandSource", "child_environment"]

DEFAULT_TIMEOUT_S: float = SourceConfig.timeout_s  #: How long a command may run, seconds.
FORMATS = ("number", "json")  #: What a command prints.
REAP_TIMEOUT_S = 1.0  #: How long to wait for a killed command to go, seconds.
STDERR_TAIL = 200  #: Characters of a failed command's stderr that go into the log.
#: Environment variables no command sees, whatever the config: the broker password's.
SECRET_ENV = ("SENSORCAST_MQTT_PASSWORD",)


class CommandSource(PolledSource):
    """Runs ``command`` (an argv list, no shell) every ``interval_s`` seconds.

    ``format = "number"``: stdout is one number for the feature at
    ``feature_index``, timestamped when the command exits. ``format =
    "json"``: stdout is one JSON object like an MQTT JSON reading (features
    by name, optional ``ts`` in Unix seconds). The default is ``number`` when
    the source is bound to one feature (``feature_index`` given), else ``json``.

    A non-zero exit or running longer than ``timeout_s`` seconds is a failure
    (the command and anything it started are killed). The command gets no
    stdin and runs in its own session, so the agent's signals do not reach it.

    Its environment is the agent's without the broker password: no :data:`SECRET_ENV`
    variable, none named in ``secret_env`` (``mqtt.password_env``), and none whose value
    is one of ``secrets`` (the password, however it was given).
    """

    type_name = "command"
    config_keys = frozenset({"command", "format", "interval_s", "timeout_s", "max_backoff_s"})
    for_feature = True
    for_stream = True
    timing_keys = ("interval_s", "timeout_s", "max_backoff_s")

    def __init__(
        self,
        stream: int,
        stream_name: str,
        features: tuple[str, ...],
        feature_index: Optional[int],
        command: Sequence[str],
        sink: ReadingSink,
        interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        format: Optional[str] = None,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        secrets: Collection[SecretValue] = (),
        secret_env: Collection[str] = (),
    ) -> None:
        super().__init__(stream, stream_name, features, sink, interval_s, max_backoff_s)
        where = f"stream {stream_name}: command source"
        if isinstance(command, str) or not command or not all(isinstance(a, str) for a in command):
            raise ConfigError(f"{where}: command must be a non-empty list of strings")
        if format is None:
            format = "json" if feature_index is None else "number"
        if format not in FORMATS:
            raise ConfigError(f"{where}: format must be one of {', '.join(FORMATS)}")
        if format == "number" and feature_index is None:
            raise ConfigError(f"{where}: format 'number' needs the source bound to one feature")
        if feature_index is not None and not 0 <= feature_index < len(features):
            raise ConfigError(f"{where}: feature index {feature_index} out of range")
        if not timeout_s > 0:
            raise ConfigError(f"{where}: timeout_s must be > 0, not {timeout_s}")
        self.feature_index = feature_index
        self.command = tuple(command)
        self.timeout_s = timeout_s
        self.format = format
        if feature_index is None:
            self._indexed = tuple(enumerate(features))
        else:
            self._indexed = ((feature_index, features[feature_index]),)
        self._proc_lock = threading.Lock()
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._secrets = tuple(secrets)
        self._secret_env = frozenset((*SECRET_ENV, *secret_env))

    @classmethod
    def parse_config(cls, table: SourceTable) -> SourceConfig:
        """``command`` (required: argv), ``format``, ``interval_s``, ``timeout_s``,
        ``max_backoff_s``."""
        # None, not the field's (): absent or not a list is reported once, by the reader
        command = table.get("command", list, required=True, default=None)
        if command is not None and (not command or not all(isinstance(a, str) for a in command)):
            table.error("command", 'must be a list of strings, e.g. ["/usr/bin/x", "-j"]')
            command = None
        fmt = table.get("format", str, default="number" if table.feature else "json")
        if fmt not in FORMATS or (fmt == "number" and table.feature is None):
            table.error("format", "must be 'json' (or 'number' for one feature's input)")
        return SourceConfig(
            type=cls.type_name,
            where=table.where,
            feature=table.feature,
            command=tuple(command) if command else (),
            format=fmt,
            **cls.parse_timing(table),
        )

    @classmethod
    def from_config(cls, cfg: SourceConfig, ctx: SourceContext) -> CommandSource:
        """A command source for the stream in ``ctx``: the broker password (``ctx.secrets``,
        ``ctx.secret_env``) stays out of the command's environment."""
        return cls(
            ctx.stream, ctx.stream_name, ctx.features, ctx.feature_index(cfg), cfg.command,
            ctx.sink, interval_s=cfg.interval_s, timeout_s=cfg.timeout_s, format=cfg.format,
            max_backoff_s=cfg.max_backoff_s, secrets=ctx.secrets, secret_env=ctx.secret_env,
        )  # fmt: skip

    def describe(self) -> str:
        """The command's name, for log lines."""
        return f"command {self.command[0]}"

    def read_once(self, now: float) -> list[Reading]:
        """Run the command once and parse what it printed; ``now`` in Unix s."""
        stdout = self._run_command()
        ts = time.time()
        if self.format == "number":
            assert self.feature_index is not None
            return [Reading(self.stream, self.feature_index, ts, parse_number(stdout))]
        readings, rejections = parse_json_reading(stdout, ts, self._indexed, self.stream)
        for r in rejections:
            self._bad(r, r.detail)
        return readings

    def _run_command(self) -> bytes:
        with self._proc_lock:
            if self._stop.is_set():
                raise SourceError("closing")
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                # built per run (a fork and exec cost far more): the environment as it is now
                env=child_environment(os.environ, self._secret_env, self._secrets),
            )
            self._proc = proc
        try:
            try:
                stdout, stderr = proc.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill(proc)
                raise
        finally:
            with self._proc_lock:
                self._proc = None
        if proc.returncode != 0:
            tail = stderr.decode("utf-8", errors="replace").strip()[-STDERR_TAIL:]
            raise SourceError(f"exit status {proc.returncode}" + (f": {tail}" if tail else ""))
        return stdout

    def _interrupt(self) -> None:
        with self._proc_lock:
            if self._proc is not None and self._proc.returncode is None:
                _kill(self._proc, reap=False)


def child_environment(
    environ: Mapping[str, str], names: Collection[str], secrets: Collection[SecretValue] = ()
) -> dict[str, str]:
    """``environ`` without the variables in ``names`` and any whose value is a secret."""
    values = {s.reveal() for s in secrets}
    values.discard("")  # an empty password must not strip every empty variable
    return {k: v for k, v in environ.items() if k not in names and v not in values}


def _kill(proc: subprocess.Popen[bytes], reap: bool = True) -> None:
    """Kill the command and what it started (its session), then reap it."""
    try:
        if hasattr(os, "killpg"):
            # start_new_session made the command a process group leader.
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - not POSIX
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass  # already gone
    if not reap:
        return
    try:
        proc.communicate(timeout=REAP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # Something outside the session still holds the pipes; stop waiting for it.
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait(REAP_TIMEOUT_S)
