"""Helpers for the model update tests: real HTTP servers on 127.0.0.1, bundle variants made by
editing a real bundle's manifest in place, and Ed25519 keys."""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from sensorcast.agent.forecast.manifest import read_manifest_bytes

from tests.support.paths import DATA_DIR

__all__ = [
    "DEMO",
    "NEWER",
    "Server",
    "answer",
    "created",
    "http_server",
    "patch_manifest",
    "request",
    "undated",
    "write_key",
]

DEMO = DATA_DIR / "room_demo.tflite"  #: created 2026-11-24T00:35:18Z
NEWER = DATA_DIR / "room_float32.tflite"  #: same features, created 00:37:36Z

Respond = Callable[[http.server.BaseHTTPRequestHandler], None]


class Server:
    """A real HTTP server on 127.0.0.1; ``respond(handler)`` answers each GET. Requests are
    recorded as ``(path, headers)``, and ``gone`` is set when a client hung up mid-answer."""

    def __init__(self, respond: Respond) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.gone = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers.items())))
                try:
                    respond(self)
                except (BrokenPipeError, ConnectionResetError):
                    server.gone.set()

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str = "/bundle.tflite", userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def http_server(respond: Respond) -> Iterator[Server]:
    server = Server(respond)
    try:
        yield server
    finally:
        server.close()


def answer(data: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Respond:
    """A ``respond`` that sends ``data`` with ``status`` and ``headers``."""

    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return respond


def patch_manifest(bundle: bytes, old: str, new: str) -> bytes:
    """``bundle`` with ``old`` replaced by ``new`` (same length) inside its manifest: a real
    bundle whose manifest says something else, no converter needed."""
    assert len(old) == len(new), (old, new)
    manifest = read_manifest_bytes(bundle)
    assert manifest is not None and manifest.count(old.encode()) == 1, old
    assert bundle.count(manifest) == 1
    out = bundle.replace(manifest, manifest.replace(old.encode(), new.encode()))
    assert read_manifest_bytes(out) == manifest.replace(old.encode(), new.encode())
    return out


def created(bundle: bytes) -> str:
    """The manifest's ``"created": "..."`` text (to patch)."""
    manifest = read_manifest_bytes(bundle) or b""
    start = manifest.index(b'"created": "')
    return manifest[start : manifest.index(b'"', start + 12) + 1].decode()


def undated(bundle: bytes) -> bytes:
    """``bundle`` with an unreadable manifest ``created`` ("???...", the same length)."""
    text = created(bundle)
    value = text[len('"created": "') : -1]
    return patch_manifest(bundle, text, text.replace(value, "?" * len(value)))


def request(data: bytes, stream: str = "room", **extra: Any) -> dict[str, Any]:
    """A model/set request for ``data`` with its digest (inline unless ``url`` is given)."""
    body: dict[str, Any] = {"stream": stream, "sha256": hashlib.sha256(data).hexdigest()}
    if "url" not in extra:
        body["data"] = base64.b64encode(data).decode()
    return {**body, **extra}


def write_key(directory: Path) -> Callable[[bytes], str]:
    """Write ``update.pub`` (Ed25519, PEM) into ``directory``; returns a signer (base64)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    (directory / "update.pub").write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return lambda data: base64.b64encode(key.sign(data)).decode()
