"""Model update policy without a broker: the real updater thread, real bundle files, real HTTP
servers on 127.0.0.1. Closed by default, no downgrade, https only (http for signed bundles),
no digest of bytes that did not match, no URL password in any message."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from sensorcast.agent.config import Config, config_warnings, load_config
from sensorcast.agent.control.download import DownloadError, download, redact_url
from sensorcast.agent.control.updates import ModelUpdater, restore_previous
from sensorcast.agent.errors import ConfigError
from sensorcast.agent.publish.mqtt5 import Reply

from tests.support.configs import agent_config, topic_stream
from tests.support.updates import (
    DEMO,
    NEWER,
    answer,
    created,
    http_server,
    patch_manifest,
    request,
    undated,
    write_key,
)

MAX = 50 * 1024 * 1024


class Updater:
    """A real :class:`ModelUpdater` on a config file; collects what it publishes."""

    def __init__(self, tmp_path: Path, updates: dict[str, Any], model: Path = DEMO) -> None:
        (tmp_path / "models").mkdir()
        self.model = tmp_path / "models" / "room.tflite"
        shutil.copy(model, self.model)
        path = agent_config(
            tmp_path,
            device="u",
            port=1,
            updates=updates,
            streams=[topic_stream("models/room.tflite", "in")],
        )
        self.cfg: Config = load_config(path)
        self.states: list[dict[str, Any]] = []
        self.applied: list[tuple[str, str]] = []
        self.shadowed: list[str] = []  # streams a bundle was installed for as the shadow
        self.replies: list[tuple[str, bytes, bytes | None]] = []
        self._cond = threading.Condition()
        self.updater = ModelUpdater(
            self.cfg, self._publish, self._applied, on_shadow=self.shadowed.append,
            reply=lambda topic, body, corr: self.replies.append((topic, body, corr)),
        )  # fmt: skip

    def _applied(self, stream: str, sha256: str) -> None:
        self.applied.append((stream, sha256))

    def _publish(self, topic: str, body: bytes) -> None:
        assert topic == "sensorcast/u/model/state"
        with self._cond:
            self.states.append(json.loads(body))
            self._cond.notify_all()

    def ask(self, body: dict[str, Any] | bytes, reply: Reply | None = None) -> dict[str, Any]:
        """Send one request (with an MQTT 5 response topic, if ``reply``), wait for its
        outcome."""
        n = len(self.states)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.updater.handle(payload, 0.0, reply)
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.states) > n, 60), "no state published"
            return self.states[-1]

    def close(self) -> None:
        self.updater.close()


@pytest.fixture
def make(tmp_path: Path) -> Any:
    made: list[Updater] = []

    def factory(
        updates: dict[str, Any] | None = None, model: Path = DEMO, where: str = "a"
    ) -> Updater:
        d = tmp_path / where
        d.mkdir()
        u = Updater(d, updates or {}, model)
        made.append(u)
        return u

    yield factory
    for u in made:
        u.close()


def test_updates_are_closed_by_default_and_say_what_to_set(make: Any) -> None:
    u = make()
    assert u.cfg.updates.enabled and u.cfg.updates.mode == "closed"
    state = u.ask(request(NEWER.read_bytes()))
    assert state["status"] == "rejected" and state["stream"] == "room"
    assert "updates.public_key" in state["reason"]
    assert "updates.allow_unsigned = true" in state["reason"]
    assert u.model.read_bytes() == DEMO.read_bytes() and not u.applied
    assert config_warnings(u.cfg) == []
    # Nothing in a request is looked at: not its JSON, not its URL.
    state = u.ask(b"{not json")
    assert state["status"] == "rejected" and state["reason"] == u.states[0]["reason"]
    assert state["stream"] is None


def test_allow_unsigned_opens_them_with_a_warning(make: Any) -> None:
    u = make({"allow_unsigned": True})
    (warning,) = config_warnings(u.cfg)
    assert "allow_unsigned" in warning and "public_key" in warning
    state = u.ask(request(NEWER.read_bytes()))
    assert state["status"] == "applied", state
    assert u.model.read_bytes() == NEWER.read_bytes()
    assert u.applied == [("room", hashlib.sha256(NEWER.read_bytes()).hexdigest())]


def test_allow_unsigned_with_a_public_key_is_a_user_mistake(tmp_path: Path) -> None:
    write_key(tmp_path)
    shutil.copy(DEMO, tmp_path / "room.tflite")
    path = agent_config(
        tmp_path,
        port=1,
        updates={"public_key": "update.pub", "allow_unsigned": True},
        streams=[topic_stream("room.tflite", "in")],
    )
    with pytest.raises(ConfigError, match=r"updates\.allow_unsigned: cannot be combined"):
        load_config(path)


def test_signed_mode_refuses_a_request_without_a_valid_signature(make: Any, tmp_path: Path) -> None:
    sign = write_key(tmp_path)
    u = make({"public_key": "../update.pub"})
    data = NEWER.read_bytes()
    assert "'signature'" in u.ask(request(data))["reason"]
    assert "does not verify" in u.ask(request(data, signature=sign(b"other")))["reason"]
    assert u.ask(request(data, signature=sign(data)))["status"] == "applied"


def test_an_older_bundle_is_refused_whatever_the_request_says(make: Any) -> None:
    u = make({"allow_unsigned": True}, model=NEWER)
    older = DEMO.read_bytes()
    for extra in ({}, {"allow_downgrade": True}, {"force": True}):
        state = u.ask({**request(older), **extra})
        assert state["status"] == "rejected", state
        assert "older than the running model" in state["reason"]
        assert "updates.allow_downgrade = true" in state["reason"]
    assert u.model.read_bytes() == NEWER.read_bytes()
    # No readable created time: it could be of any age.
    state = u.ask(request(undated(NEWER.read_bytes())))
    assert state["status"] == "rejected" and "no readable created time" in state["reason"]
    # The same age (here: the same bundle again) is no downgrade.
    assert u.ask(request(NEWER.read_bytes()))["status"] == "applied"


def test_allow_downgrade_in_the_device_config_allows_it(make: Any) -> None:
    u = make({"allow_unsigned": True, "allow_downgrade": True}, model=NEWER)
    assert u.ask(request(DEMO.read_bytes()))["status"] == "applied"
    assert u.model.read_bytes() == DEMO.read_bytes()


def test_a_running_model_without_a_created_time_accepts_any(make: Any, tmp_path: Path) -> None:
    model = tmp_path / "undated.tflite"
    model.write_bytes(undated(NEWER.read_bytes()))
    u = make({"allow_unsigned": True}, model=model)
    assert u.ask(request(DEMO.read_bytes()))["status"] == "applied"


def test_a_bundle_with_a_hostile_manifest_number_is_refused(make: Any) -> None:
    """Signed or not, a bundle is checked as the agent checks a model at start, before it
    replaces anything (a period of 1e-99 s would overflow the window at the first reading)."""
    u = make({"allow_unsigned": True})
    bad = patch_manifest(NEWER.read_bytes(), '"period_s": 300.0', '"period_s": 1e-99')
    state = u.ask(request(bad))
    assert state["status"] == "rejected" and "period_s" in state["reason"], state
    assert "the bundle: manifest field period_s" in state["reason"], state
    assert u.model.read_bytes() == DEMO.read_bytes()
    assert sorted(p.name for p in u.model.parent.iterdir()) == ["room.tflite"]


def test_a_digest_mismatch_publishes_no_digest(make: Any) -> None:
    u = make({"allow_unsigned": True})
    data = NEWER.read_bytes()
    state = u.ask({**request(data), "sha256": "0" * 64})
    assert state["status"] == "rejected"
    assert state["reason"].startswith("digest mismatch")
    assert hashlib.sha256(data).hexdigest()[:6] not in state["reason"]
    assert not re.search(r"[0-9a-f]{8}", state["reason"])


def test_local_files_and_other_schemes_are_refused_before_anything_is_read(
    make: Any, tmp_path: Path
) -> None:
    u = make({"allow_unsigned": True})
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2\n")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    reasons = {}
    data_url = "data:application/octet-stream;base64,AAAA"
    for url in (f"file://{secret}", f"file://{tmp_path}/missing", "ftp://127.0.0.1/x",
                data_url, str(secret), "//127.0.0.1/x"):  # fmt: skip
        state = u.ask(request(b"", url=url, sha256=digest))
        assert state["status"] == "rejected", (url, state)
        assert "only https URLs are accepted" in state["reason"], state
        assert digest[:8] not in state["reason"]
        reasons[url] = state["reason"].replace(url, "URL")
    # A file that exists and one that does not get the same answer: no oracle.
    assert reasons[f"file://{secret}"] == reasons[f"file://{tmp_path}/missing"]


def test_plain_http_only_for_signed_bundles_and_refused_before_connecting(
    make: Any, tmp_path: Path
) -> None:
    data = NEWER.read_bytes()
    sign = write_key(tmp_path)
    with http_server(answer(data)) as server:
        unsigned = make({"allow_unsigned": True})
        state = unsigned.ask(request(data, url=server.url()))
        assert state["status"] == "rejected" and "plain http" in state["reason"], state
        assert server.requests == []  # refused before opening anything
        signed = make({"public_key": "../update.pub"}, where="b")
        state = signed.ask(request(data, url=server.url(), signature=sign(data)))
        assert state["status"] == "applied", state
        assert len(server.requests) == 1


def test_a_url_password_is_never_printed(make: Any, tmp_path: Path) -> None:
    secret = "s3cret-Pa55"
    sign = write_key(tmp_path)
    with http_server(answer(b"nope", status=404)) as server:
        url = server.url(userinfo=f"updater:{secret}")
        with pytest.raises(DownloadError) as info:
            download(url, MAX, 30, allow_http=True)
        assert secret not in str(info.value) and "updater:***@" in str(info.value)
        assert "HTTP 404" in str(info.value)
        u = make({"public_key": "../update.pub"})
        for bad in (url, f"http://updater:{secret}@127.0.0.1:notaport/x",
                    f"http://updater:{secret}@[::1/x", f"ftp://updater:{secret}@host/x",
                    f"http://updater:a/{secret}@127.0.0.1:1/x"):  # fmt: skip
            state = u.ask(request(b"x", url=bad, signature=sign(b"x")))
            assert state["status"] == "rejected", state
            assert secret not in json.dumps(state), state


def test_redact_url() -> None:
    assert redact_url("https://u:pw@h:1/p?q=1") == "https://u:***@h:1/p?q=1"
    assert redact_url("https://ghp_token@h/p") == "https://***@h/p"
    assert redact_url("https://h/p?mail=a@b") == "https://h/p?mail=a@b"
    assert redact_url("http://u:a/b#c@h/p") == "http://***@h/p"
    assert redact_url("https://h/p") == "https://h/p"


def test_url_credentials_are_sent_as_basic_auth(tmp_path: Path) -> None:
    data = b"bundle bytes"
    with http_server(answer(data)) as server:
        assert download(server.url(userinfo="up%40x:p%3Aw"), MAX, 30, allow_http=True) == data
        (path, headers), = server.requests  # fmt: skip
        assert path == "/bundle.tflite"
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"up@x:p:w").decode()


def test_redirects_only_to_urls_the_request_could_name() -> None:
    data = b"bundle bytes"
    with http_server(answer(data)) as target:
        to_http = answer(b"", 302, {"Location": target.url("/ok")})
        with http_server(to_http) as server:
            assert download(server.url(), MAX, 30, allow_http=True) == data
        to_ftp = answer(b"", 302, {"Location": "ftp://127.0.0.1/x"})
        refused = pytest.raises(DownloadError, match=r"redirected \(302\) to a refused URL")
        with http_server(to_ftp) as server, refused:
            download(server.url(), MAX, 30, allow_http=True)


def test_a_download_larger_than_max_bytes_is_refused() -> None:
    with (
        http_server(answer(b"x" * 5000)) as server,
        pytest.raises(DownloadError, match=r"more than updates\.max_bytes"),
    ):
        download(server.url(), 4096, 30, allow_http=True)


def test_restore_previous(tmp_path: Path) -> None:
    model = tmp_path / "room.tflite"
    model.write_bytes(b"new")
    assert not restore_previous(model) and model.read_bytes() == b"new"
    (tmp_path / "room.tflite.previous").write_bytes(b"old")
    assert restore_previous(model)
    assert model.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["room.tflite", "room.tflite.previous"]


def _dated(bundle: bytes, old: str, new: str) -> bytes:
    """``bundle`` with ``old`` replaced by ``new`` in its manifest's created time."""
    text = created(bundle)
    return patch_manifest(bundle, text, text.replace(old, new))


def test_a_shadow_request_installs_the_shadow_and_leaves_the_live_model(make: Any) -> None:
    u = make({"allow_unsigned": True}, model=NEWER)
    shadow = u.model.with_name("room.tflite.shadow")
    candidate = _dated(NEWER.read_bytes(), "00:37:36", "00:38:36")
    state = u.ask(request(candidate, shadow=True))
    assert state["status"] == "applied" and state["shadow"] is True, state
    assert shadow.read_bytes() == candidate and u.model.read_bytes() == NEWER.read_bytes()
    assert sorted(p.name for p in u.model.parent.iterdir()) == ["room.tflite", shadow.name]
    assert u.shadowed == ["room"] and u.applied == []  # no trial of the live model
    # The same rules as for the live model: no downgrade (against the live model) ...
    older = _dated(NEWER.read_bytes(), "2026-", "2025-")
    state = u.ask(request(older, shadow=True))
    assert state["status"] == "rejected" and "older than the running model" in state["reason"]
    # ... the digest, and a "shadow" that means what it says.
    assert "digest mismatch" in u.ask({**request(older, shadow=True), "sha256": "0" * 64})["reason"]
    assert "'shadow' must be true" in u.ask(request(candidate, shadow="yes"))["reason"]
    assert shadow.read_bytes() == candidate and u.shadowed == ["room"]


def test_a_shadow_request_on_a_closed_device_is_refused(make: Any) -> None:
    u = make()
    state = u.ask(request(NEWER.read_bytes(), shadow=True))
    assert state["status"] == "rejected" and "updates.public_key" in state["reason"]
    assert not u.model.with_name("room.tflite.shadow").exists()


def test_the_state_goes_to_the_response_topic_with_the_correlation_data(make: Any) -> None:
    u = make({"allow_unsigned": True}, model=NEWER)
    candidate = _dated(NEWER.read_bytes(), "00:37:36", "00:38:36")
    state = u.ask(request(candidate), Reply("answers/me", b"\x00req-1"))
    assert state["status"] == "applied"
    ((topic, body, correlation),) = u.replies
    assert (topic, json.loads(body), correlation) == ("answers/me", state, b"\x00req-1")
    refused = u.ask(b"{not json", Reply("answers/me", None))
    assert u.replies[-1] == ("answers/me", json.dumps(refused).encode(), None)
    u.ask(request(candidate))  # no response topic: the state topic only
    assert len(u.replies) == 2
