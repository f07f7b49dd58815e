"""The bundle's signature for a rollout: made here with an Ed25519 private key (PEM), or
given (base64, inline or from a file), or none at all when the user opts in to unsigned
updates (devices refuse those unless their own config allows them)."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Optional

from sensorcast.agent.errors import ConfigError

__all__ = ["load_signature", "sign"]


def sign(data: bytes, key_file: Path) -> str:
    """Ed25519 signature of ``data`` with the private key in ``key_file`` (PEM), base64."""
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError as exc:  # an optional dependency: only signing needs it
        raise ConfigError(
            "--key needs the 'cryptography' package: pip install cryptography, or sign "
            "elsewhere and pass --signature"
        ) from exc
    try:
        pem = key_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--key {key_file}: cannot read it: {exc.strerror}") from exc
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"--key {key_file}: not an unencrypted PEM private key ({exc}); make one with "
            "`openssl genpkey -algorithm ed25519 -out update.pem`"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"--key {key_file}: not an Ed25519 key; devices verify Ed25519")
    return base64.b64encode(key.sign(data)).decode()


def load_signature(value: str) -> str:
    """``--signature``: base64 inline, or ``@FILE`` holding it (or the raw 64 bytes)."""
    raw: bytes
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--signature {value}: cannot read it: {exc.strerror}") from exc
        if len(raw) == 64:
            return base64.b64encode(raw).decode()
    else:
        raw = value.encode()
    text = raw.decode("ascii", errors="replace").strip()
    decoded: Optional[bytes]
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = None
    if decoded is None or len(decoded) != 64:
        raise ConfigError(
            f"--signature {value[:40]}: not a base64 Ed25519 signature (64 bytes); sign the "
            "bundle file with the devices' key, or pass --key"
        )
    return text
