"""Checks of the files a config names: is it a regular file, and do TLS files load.

Used during config validation, so that ``sensorcast check`` (and ``run``, before it
connects) says in one line what is wrong with a path instead of failing later.
"""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path
from typing import Optional

__all__ = ["not_a_file", "tls_file_errors"]


def not_a_file(path: Path) -> Optional[str]:
    """None if ``path`` is a regular file (after symlinks), else what it is instead."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"file not found: {path}"
    except OSError as exc:
        return f"cannot access {path} ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return f"{path} is a directory, not a file"
    kinds = (
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISSOCK, "socket"),
    )
    kind = next((name for test, name in kinds if test(mode)), "special file")
    return f"{path} is not a regular file ({kind})"


def tls_file_errors(
    ca_file: Optional[Path], cert_file: Optional[Path], key_file: Optional[Path]
) -> list[str]:
    """Problems loading the TLS files the way the MQTT connection will (PEM, OpenSSL)."""
    errors: list[str] = []
    if ca_file is not None:
        errors.extend(_ca_errors(ca_file))
    if cert_file is None or key_file is None:
        return errors
    problem = _cert_error(cert_file)
    if problem is not None:
        errors.append(problem)
        return errors
    problem = _key_error(cert_file, key_file)
    if problem is not None:
        errors.append(problem)
    return errors


def _ca_errors(ca_file: Path) -> list[str]:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(ca_file))
    except ssl.SSLError:
        return [
            f"mqtt.ca_file: {ca_file} holds no PEM certificate; give the CA "
            "certificate that signed the broker's (-----BEGIN CERTIFICATE-----)"
        ]
    except OSError as exc:
        return [f"mqtt.ca_file: cannot read {ca_file} ({exc.strerror})"]
    return []


def _cert_error(cert_file: Path) -> Optional[str]:
    try:
        # A client certificate parses as a trust anchor too: this says which file is wrong,
        # where load_cert_chain says only "PEM lib".
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(cert_file))
    except ssl.SSLError:
        return f"mqtt.cert_file: {cert_file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    except OSError as exc:
        return f"mqtt.cert_file: cannot read {cert_file} ({exc.strerror})"
    return None


def _key_error(cert_file: Path, key_file: Path) -> Optional[str]:
    asked: list[bool] = []

    def no_passphrase() -> bytes:
        # Without this callback OpenSSL would prompt on the terminal (or hang under systemd).
        asked.append(True)
        return b""

    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_cert_chain(str(cert_file), str(key_file), password=no_passphrase)
    except ssl.SSLError as exc:
        if asked:
            return (
                f"mqtt.key_file: {key_file} is encrypted; the agent needs an "
                "unencrypted key (openssl pkey -in KEY -out KEY.plain)"
            )
        if exc.reason == "KEY_VALUES_MISMATCH":
            return f"mqtt.key_file: {key_file} is not the key of mqtt.cert_file {cert_file}"
        return f"mqtt.key_file: {key_file} holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
    except OSError as exc:
        return f"mqtt.key_file: cannot read {key_file} ({exc.strerror})"
    return None
