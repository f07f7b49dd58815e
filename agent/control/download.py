"""Fetch a model bundle over https (or http), safely for a device on an untrusted network.

Every scheme but https (and http, when the caller will check a signature) is refused before
anything is opened, redirects included; there is no file:, ftp: or data: handler at all.
``timeout_s`` is a deadline for the whole download, connect to last byte: the download runs
in a thread of its own that the caller leaves at the deadline, and whose sockets are then
shut down. A URL's password never appears in a message (:func:`redact_url`).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import ssl
import threading
import urllib.error
import urllib.request
from typing import Any, Optional
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["DownloadError", "download", "redact_url", "scrub"]


class DownloadError(Exception):
    """Why a URL was refused or its download failed (one line, no password)."""


def redact_url(url: str) -> str:
    """``url`` for messages: ``user:***@host`` for ``user:password@host``, and ``***@host``
    for a lone user name (often a token)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        netloc = ""
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        hidden = f"{user}:***" if colon else "***"
        return urlunsplit(parts._replace(netloc=f"{hidden}@{host}"))
    # Not a URL urlsplit understands (a raw / or # in the password): hide everything between
    # the scheme and the last @, rather than guess where the password ends.
    start = url.find("://")
    start = 0 if start < 0 else start + 3
    at = url.rfind("@")
    if at < start or ":" not in url[start:at]:
        return url  # no password there (an @ in the path or query)
    return url[:start] + "***" + url[at:]


def scrub(text: str, url: Optional[str]) -> str:
    """``text`` with the URL's password (and any lone user name) replaced by ``***``."""
    if not isinstance(url, str):
        return text
    try:
        parts = urlsplit(url)
        secrets = [parts.password] if parts.password else []
        if parts.username and not parts.password:
            secrets.append(parts.username)
    except ValueError:
        secrets = []
    text = text.replace(url, redact_url(url))
    for secret in [*secrets, *(unquote(s) for s in secrets)]:
        text = text.replace(secret, "***")
    return text


def _open_request(url: str, allow_http: bool) -> urllib.request.Request:
    """Refuse every scheme but https (and http for signed bundles) before opening anything;
    a ``user:password@`` becomes a Basic Authorization header that is not sent on to a
    redirect's host."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise DownloadError(f"url {redact_url(url)} is not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme == "http" and not allow_http:
        raise DownloadError(
            f"url {redact_url(url)}: plain http is accepted only for signed bundles; use "
            "https, or set updates.public_key and sign the bundle"
        )
    if scheme not in ("https", "http"):
        raise DownloadError(
            f"url {redact_url(url)}: only https URLs are accepted (http for signed bundles), "
            f"not {scheme + ':' if scheme else 'one without a scheme'}"
        )
    if not host:
        raise DownloadError(f"url {redact_url(url)} has no host")
    netloc = parts.netloc.rpartition("@")[2]
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=netloc)))
    if parts.username is not None or parts.password is not None:
        user = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(user.encode("utf-8")).decode("ascii")
        request.add_unredirected_header("Authorization", auth)
    return request


def download(url: str, max_bytes: int, timeout_s: float, allow_http: bool) -> bytes:
    """The bytes at ``url`` (at most ``max_bytes``), within ``timeout_s`` for the whole
    download, from the connect to the last byte; raises :class:`DownloadError`."""
    request = _open_request(url, allow_http)
    job = _Download(request, max_bytes, timeout_s, allow_http)
    job.start()
    job.join(timeout_s)
    if job.is_alive():
        job.cancel()  # its sockets are shut down: the thread ends on its own
        raise DownloadError(
            f"download of {redact_url(url)} abandoned at its deadline: not complete within "
            f"updates.timeout_s ({timeout_s:g} s)"
        )
    where = f"download of {redact_url(url)}"
    if isinstance(job.error, DownloadError):
        raise DownloadError(f"{where}: {job.error}") from job.error
    if isinstance(job.error, urllib.error.HTTPError):
        job.error.close()
        raise DownloadError(f"{where} failed: HTTP {job.error.code} {job.error.reason}")
    if isinstance(job.error, urllib.error.URLError):
        raise DownloadError(f"{where} failed: {job.error.reason}") from job.error
    if job.error is not None:
        raise DownloadError(f"{where} failed: {type(job.error).__name__}: {job.error}")
    assert job.data is not None
    return job.data


class _Download(threading.Thread):
    """One download in a thread of its own, so that the update worker can leave it at the
    deadline wherever it is stuck (the TLS handshake, headers or body trickling in);
    :meth:`cancel` shuts its connections down so that the thread ends too."""

    def __init__(
        self, request: urllib.request.Request, max_bytes: int, timeout_s: float, allow_http: bool
    ) -> None:
        super().__init__(name="model-download", daemon=True)
        self.data: Optional[bytes] = None
        self.error: Optional[BaseException] = None
        self._request, self._max, self._timeout_s = request, max_bytes, timeout_s
        self._allow_http = allow_http
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []
        self._cancelled = False

    def run(self) -> None:
        try:
            self.data = self._fetch()
        except BaseException as exc:  # handed to the worker, which words it
            self.error = exc

    def _fetch(self) -> bytes:
        opener = urllib.request.OpenerDirector()  # no file:, ftp: or data: handler at all
        for handler in (
            urllib.request.ProxyHandler(),
            urllib.request.UnknownHandler(),
            _HTTPHandler(self),
            _HTTPSHandler(self),
            urllib.request.HTTPDefaultErrorHandler(),
            _Redirects(self._allow_http),
            urllib.request.HTTPErrorProcessor(),
        ):
            opener.add_handler(handler)
        with opener.open(self._request, timeout=self._timeout_s) as response:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > self._max:
                raise DownloadError(f"{length} bytes, more than updates.max_bytes ({self._max})")
            chunks: list[bytes] = []
            size = 0
            while not self._cancelled:
                chunk = response.read1(65536)  # one socket read: a trickle cannot pile up
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > self._max:
                    raise DownloadError(f"larger than updates.max_bytes ({self._max})")
                chunks.append(chunk)
        raise DownloadError("cancelled")

    def connection(self, cls: type[http.client.HTTPConnection]) -> Any:
        """A connection factory for ``do_open`` that remembers what it made, for cancel."""

        def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            conn = cls(host, **kwargs)
            with self._lock:
                self._connections.append(conn)
            return conn

        return make

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            socks = [c.sock for c in self._connections if c.sock is not None]
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, job: _Download) -> None:
        super().__init__()
        self._job = job

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._job.connection(http.client.HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, job: _Download) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(context=self._tls)
        self._job = job

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            self._job.connection(http.client.HTTPSConnection), req, context=self._tls
        )


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL the request itself could have named."""

    def __init__(self, allow_http: bool) -> None:
        super().__init__()
        self._allow_http = allow_http

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> Optional[urllib.request.Request]:
        try:
            clean = _open_request(newurl, self._allow_http)
        except DownloadError as exc:
            fp.close()  # urllib closes it only after a redirect it follows
            raise DownloadError(f"redirected ({code}) to a refused URL: {exc}") from exc
        return super().redirect_request(req, fp, code, msg, headers, clean.full_url)
