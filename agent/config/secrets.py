"""Secrets: a value that never prints, and the broker password read from (first found) the
environment, a systemd credential, a file, a named variable, or the config itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from sensorcast.agent.config.files import not_a_file
from sensorcast.agent.config.reader import Reader

__all__ = ["MAX_PASSWORD_BYTES", "PASSWORD_KEYS", "Secret", "read_password"]

#: An MQTT password is at most 65535 bytes (a two-byte length prefix).
MAX_PASSWORD_BYTES = 65535

#: The ``[mqtt]`` keys that give the password; at most one of them.
PASSWORD_KEYS = ("password", "password_file", "password_env", "password_credential")


class Secret:
    """A value that never shows in logs, reprs or error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one call that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_password(r: Reader, raw: dict[str, Any], env: dict[str, str]) -> Optional[str]:
    """The broker password from (first found): SENSORCAST_MQTT_PASSWORD, password_credential
    (systemd ``LoadCredential=``), password_file, password_env, password."""
    if env.get("SENSORCAST_MQTT_PASSWORD"):
        return env["SENSORCAST_MQTT_PASSWORD"]
    given = [k for k in PASSWORD_KEYS if k in raw]
    if len(given) > 1:
        r.error(f"mqtt: give only one of {', '.join(given)}")
        return None
    if not given:
        return None
    key = given[0]
    value: Optional[str] = r.get(raw, key, str, "mqtt")
    if value is None or key == "password":
        return value
    if key == "password_env":
        if value not in env:
            r.error(f"mqtt.password_env: environment variable {value} is not set")
            return None
        return env[value]
    path = _password_path(r, key, value, env)
    return None if path is None else _read_password_file(r, key, path)


def _password_path(r: Reader, key: str, value: str, env: dict[str, str]) -> Optional[Path]:
    """The file ``password_credential`` or ``password_file`` names."""
    if key != "password_credential":
        return r.resolve(value)
    creds = env.get("CREDENTIALS_DIRECTORY")
    if not creds:
        r.error(
            "mqtt.password_credential: $CREDENTIALS_DIRECTORY is not set (systemd sets it "
            "from LoadCredential=; outside the service point it at the file's folder, "
            "e.g. CREDENTIALS_DIRECTORY=/etc/sensorcast sensorcast check -c ...)"
        )
        return None
    return Path(creds) / value


def _read_password_file(r: Reader, key: str, path: Path) -> Optional[str]:
    """The text of ``path`` without trailing line breaks: UTF-8, at most
    :data:`MAX_PASSWORD_BYTES` bytes."""
    problem = not_a_file(path)
    if problem:  # /dev/zero or a FIFO would be read (or waited on) forever
        r.error(f"mqtt.{key}: {problem}")
        return None
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PASSWORD_BYTES + 1)
    except OSError as exc:
        r.error(f"mqtt.{key}: cannot read {path} ({exc.strerror})")
        return None
    if len(data) > MAX_PASSWORD_BYTES:
        r.error(f"mqtt.{key}: {path} is larger than a password file can be")
        return None
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        r.error(f"mqtt.{key}: {path} is not UTF-8 text")
        return None
