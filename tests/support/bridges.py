"""A fleet's backbone for tests: a site Mosquitto bridged to a central one, as
deploy/mosquitto-site.conf and deploy/mosquitto-central.conf ship them, the bridge's TCP link
going through a proxy a test can cut and restore.

    with BridgedPair(prefix=topic_prefix) as pair:   # returns once the bridge is up
        ... agents on pair.site.port, consumers on pair.central.port ...
        pair.cut()        # the central broker sees the bridge go: its will "0" on pair.topic
        pair.restore()    # the bridge reconnects within a second or two: "1"

The configs are the shipped files with only ports, paths, the topic prefix and the site's
name (and the bridge's timing, see :func:`site_conf`) replaced: every replaced line must be
in the shipped file, so a change there that the tests would no longer cover fails here.
"""

from __future__ import annotations

import contextlib
import pwd
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.brokers import MosquittoBroker, find_mosquitto
from tests.support.host import missing_tool
from tests.support.managed import Managed
from tests.support.paths import REPO

__all__ = [
    "CENTRAL_CONF",
    "SITE_CONF",
    "BridgedPair",
    "LinkProxy",
    "central_conf",
    "run_bridged_pair",
    "site_conf",
]

SITE_CONF = REPO / "deploy" / "mosquitto-site.conf"
CENTRAL_CONF = REPO / "deploy" / "mosquitto-central.conf"
_AUTH = "allow_anonymous false\npassword_file /etc/mosquitto/passwd\nacl_file /etc/mosquitto/acl\n"
_STORE = "persistence_location /var/lib/mosquitto/\n"
_BRIDGE_LOGIN = "remote_username bridge\nremote_password REPLACE-WITH-THE-BRIDGE-PASSWORD\n"


def _replace(text: str, replacements: dict[str, str], source: Path) -> str:
    """``text`` with each key replaced by its value; every key must occur in it."""
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"{source.name} no longer has {old!r}: update {__name__}")
        text = text.replace(old, new)
    return text


def _auth(passwd: Optional[Path], acl: Optional[Path]) -> str:
    if passwd is None or acl is None:
        return "allow_anonymous true\n"
    return f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"


def central_conf(store: Path, passwd: Optional[Path] = None, acl: Optional[Path] = None) -> str:
    """deploy/mosquitto-central.conf on ``{port}`` (loopback), its store in ``store``;
    anonymous unless ``passwd`` and ``acl`` are given."""
    text = CENTRAL_CONF.read_text().replace("{", "{{").replace("}", "}}")
    return _replace(
        text,
        {
            "listener 1883\n": "listener {port} 127.0.0.1\n",
            _AUTH: _auth(passwd, acl),
            _STORE: f"persistence_location {store}/\n",
        },
        CENTRAL_CONF,
    )


def site_conf(
    store: Path,
    central_port: int,
    *,
    prefix: str = "sensorcast",
    site: str = "site-a",
    bridge_password: Optional[str] = None,
    passwd: Optional[Path] = None,
    acl: Optional[Path] = None,
) -> str:
    """deploy/mosquitto-site.conf on ``{port}`` (loopback), its store in ``store``, bridged
    to ``127.0.0.1:central_port`` under the topic prefix ``prefix`` for the site ``site``,
    logging in at the central broker as ``bridge`` with ``bridge_password`` (None: no login);
    anonymous unless ``passwd`` and ``acl`` are given. The bridge pings after 5 s of silence
    (Mosquitto's minimum) and retries every second, not after 5 to 30 s: tests wait less."""
    text = SITE_CONF.read_text().replace("{", "{{").replace("}", "}}")
    login = (
        ""
        if bridge_password is None
        else _BRIDGE_LOGIN.replace("REPLACE-WITH-THE-BRIDGE-PASSWORD", bridge_password)
    )
    return _replace(
        text,
        {
            "listener 1883\n": "listener {port} 127.0.0.1\n",
            _AUTH: _auth(passwd, acl),
            _STORE: f"persistence_location {store}/\n",
            "address central.example.net:1883\n": f"address 127.0.0.1:{central_port}\n",
            _BRIDGE_LOGIN: login,
            "keepalive_interval 60\n": "keepalive_interval 5\n",
            "restart_timeout 5 30\n": "restart_timeout 1\n",
            "sensorcast/": f"{prefix}/",
            "site-a": site,
        },
        SITE_CONF,
    )


class LinkProxy:
    """A TCP proxy on a free loopback port to ``127.0.0.1:target_port``, one pair of pumping
    threads per connection. :meth:`cut` closes every live connection at both ends and
    refuses new ones (accepted, then closed at once) until :meth:`restore`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.connections = 0  #: Connections forwarded so far.
        self.refused = 0  #: Connections closed at once while cut.
        self._open = True
        self._live: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed
                return
            with self._lock:
                if not self._open:
                    self.refused += 1
                    conn.close()
                    continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._live += [conn, upstream]
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        # One side ended: end both, so each peer sees the connection go (as a cable cut
        # would, once TCP noticed).
        for sock in (src, dst):
            _close(sock)

    def cut(self) -> None:
        """Close every live connection (each end gets EOF) and refuse new ones."""
        with self._lock:
            self._open = False
            live, self._live = self._live, []
        for sock in live:
            _close(sock)

    def restore(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._open = True

    def close(self) -> None:
        """Stop listening and close every connection."""
        self.cut()
        _close(self._server)
        self._thread.join(5)


def _close(sock: socket.socket) -> None:
    # shutdown() first: it wakes a recv() blocked on the socket in another thread; close()
    # alone would not.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _store() -> Path:
    """A persistence directory Mosquitto can write after dropping to the user ``mosquitto``."""
    path = Path(tempfile.mkdtemp(prefix="sensorcast-mosquitto-db-"))
    with contextlib.suppress(KeyError, PermissionError):
        pwd.getpwnam("mosquitto")
        shutil.chown(path, "mosquitto")
    return path


class BridgedPair(Managed):
    """A central Mosquitto and a site Mosquitto bridged to it through a :class:`LinkProxy`.

    ``prefix``: the devices' topic prefix; ``site``: the site's name (the bridge's state is
    retained on ``<prefix>/fleet/sites/<site>/bridge``: :attr:`topic`). With ``passwd`` and
    ``acl`` both brokers require logins (the bridge's local side is exempt: Mosquitto does
    not check a bridge against the ACL of its own broker), the bridge logging in at the
    central broker as ``bridge`` with ``bridge_password``, :meth:`bridge_state` as ``login``
    (user, password).
    """

    def __init__(
        self,
        prefix: str = "sensorcast",
        site: str = "site-a",
        *,
        passwd: Optional[Path] = None,
        acl: Optional[Path] = None,
        bridge_password: Optional[str] = None,
        login: Optional[tuple[str, str]] = None,
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            missing_tool("mosquitto is not installed: apt-get install mosquitto")
        assert binary is not None
        self.prefix, self.site_name, self.login = prefix, site, login
        self.topic = f"{prefix}/fleet/sites/{site}/bridge"
        self._stores = (_store(), _store())
        self.central = MosquittoBroker(binary, conf=central_conf(self._stores[0], passwd, acl))
        self.proxy: Optional[LinkProxy] = None
        self.site: MosquittoBroker  # set in start(): the proxy's port goes into its config
        self._binary = binary
        self._bridge_password = bridge_password
        self._auth = (passwd, acl)

    def start(self, timeout_s: float = 30) -> None:
        """Start both brokers and the proxy; return once the bridge's state is "1"."""
        self.central.start()
        self.proxy = LinkProxy(self.central.port)
        conf = site_conf(
            self._stores[1],
            self.proxy.port,
            prefix=self.prefix,
            site=self.site_name,
            bridge_password=self._bridge_password,
            passwd=self._auth[0],
            acl=self._auth[1],
        )
        self.site = MosquittoBroker(self._binary, conf=conf)
        self.site.start()
        if not self.wait_bridge("1", timeout_s):
            raise RuntimeError(f"the bridge did not come up:\n{self.logs()}")

    def cut(self) -> None:
        """Cut the link: the bridge's connections close, new ones are refused."""
        assert self.proxy is not None
        self.proxy.cut()

    def restore(self) -> None:
        """Let the bridge reconnect (it retries every second)."""
        assert self.proxy is not None
        self.proxy.restore()

    def bridge_state(self, timeout_s: float = 5) -> Optional[bytes]:
        """The retained bridge state at the central broker, as a new client reads it now
        (None: nothing retained)."""
        got: list[bytes] = []
        done = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bw-{uuid.uuid4().hex[:8]}")
        if self.login is not None:
            client.username_pw_set(*self.login)

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            if msg.retain:
                got.append(bytes(msg.payload))
            done.set()

        def on_subscribe(*_a: Any) -> None:
            # No retained message comes right after the SUBACK when there is none: a ping
            # round trip later, there would have been.
            threading.Timer(0.3, done.set).start()

        client.on_message = on_message
        client.on_subscribe = on_subscribe
        client.on_connect = lambda c, *_a: c.subscribe(self.topic, qos=1)
        client.connect("127.0.0.1", self.central.port)
        client.loop_start()
        try:
            done.wait(timeout_s)
        finally:
            client.loop_stop()
            client.disconnect()
        return got[-1] if got else None

    def wait_bridge(self, state: str, timeout_s: float = 30) -> bool:
        """Whether the central broker's retained bridge state became ``state`` in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.bridge_state() == state.encode():
                return True
            time.sleep(0.2)
        return False

    def logs(self) -> str:
        """Both brokers' logs, for assertion messages."""
        parts = []
        for name, broker in (("central", self.central), ("site", getattr(self, "site", None))):
            if broker is not None and broker.log.exists():
                tail = broker.log.read_text(errors="replace").splitlines()[-30:]
                parts.append(f"--- {name} broker ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def close(self) -> None:
        """Stop both brokers and the proxy, remove their files."""
        if hasattr(self, "site"):
            self.site.close()
        if self.proxy is not None:
            self.proxy.close()
        self.central.close()
        for store in self._stores:
            shutil.rmtree(store, ignore_errors=True)

    begin = start  #: what ``with`` starts (:class:`~tests.support.managed.Managed`)


def run_bridged_pair(prefix: str = "sensorcast", **kwargs: Any) -> Iterator[BridgedPair]:
    """A started :class:`BridgedPair`, closed after; for fixtures to ``yield from``."""
    with BridgedPair(prefix, **kwargs) as pair:
        yield pair
