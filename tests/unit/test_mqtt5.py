"""MQTT 5 publish properties (publish/mqtt5.Stamps): which schema a topic carries, and a
forecast's message expiry from its staleness limit and its time in the outbox."""

from __future__ import annotations

import logging
from typing import Optional

import pytest
from sensorcast.agent.publish.mqtt5 import MIN_EXPIRY_S, SCHEMAS, Stamps
from sensorcast.agent.publish.topics import Topics

TOPICS = Topics("sc", "pi")
LIMIT = 60


def _stamps(v5: bool = True) -> Stamps:
    return Stamps(TOPICS, lambda stream: LIMIT if stream in ("room", "model") else None, v5)


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        (TOPICS.forecast("room"), ("forecast", "room")),
        (TOPICS.quality("room"), ("quality", "room")),
        (TOPICS.anomaly("room"), ("anomaly", "room")),
        (TOPICS.forecast("model"), ("forecast", "model")),  # a stream may be called "model"
        (TOPICS.metrics, ("metrics", "")),
        (TOPICS.model_state, ("model_state", "")),
        (TOPICS.status, None),  # plain text
        ("homeassistant/sensor/sensorcast_pi/room_next/config", None),
        ("sc/other/room/forecast", None),  # another device's
        ("sc/pi/a/b/forecast", None),
        (TOPICS.model_set, None),
    ],
)
def test_the_kind_of_each_topic(topic: str, kind: Optional[tuple[str, str]]) -> None:
    assert _stamps().kind(topic) == kind


def test_every_json_message_names_its_schema() -> None:
    stamps = _stamps()
    for topic, kind in [
        (TOPICS.quality("room"), "quality"),
        (TOPICS.anomaly("room"), "anomaly"),
        (TOPICS.metrics, "metrics"),
        (TOPICS.model_state, "model_state"),
    ]:
        props = stamps.properties(topic, None, 1000.0)
        assert props is not None
        assert props.ContentType == "application/json" and props.PayloadFormatIndicator == 1
        assert props.UserProperty == [("schema", SCHEMAS[kind])]
        assert not hasattr(props, "MessageExpiryInterval")  # only forecasts go stale
    assert stamps.properties(TOPICS.status, None, 1000.0) is None
    reply = stamps.properties("requester/inbox", None, 1000.0, default="model_state")
    assert reply is not None and reply.UserProperty == [("schema", "sensorcast.model-state/1")]
    assert stamps.late == 0


def test_a_forecasts_expiry_is_the_limit_less_its_wait() -> None:
    stamps = _stamps()
    now = 10_000.0
    for waited, expiry in [(0.0, 60), (0.4, 59), (20.0, 40), (58.9, 1)]:
        props = stamps.properties(TOPICS.forecast("room"), now - waited, now)
        assert props is not None and props.MessageExpiryInterval == expiry, waited
        assert props.UserProperty == [("schema", SCHEMAS["forecast"])]
    # the clock set back since it was put (NTP after a boot): never longer than the limit
    ahead = stamps.properties(TOPICS.forecast("room"), now + 500, now)
    assert ahead is not None and ahead.MessageExpiryInterval == LIMIT
    assert stamps.late == 0
    # an unknown stream (a message queued for a stream since removed): no expiry
    gone = stamps.properties(TOPICS.forecast("gone"), now - 500, now)
    assert gone is not None and not hasattr(gone, "MessageExpiryInterval")


def test_a_forecast_past_its_limit_is_sent_with_the_minimum_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stamps = _stamps()
    now = 10_000.0
    with caplog.at_level(logging.WARNING, logger="sensorcast.agent.publish.mqtt5"):
        for queued_at in (now - 61, now - 3600, None):  # None: from an older outbox file
            props = stamps.properties(TOPICS.forecast("room"), queued_at, now)
            assert props is not None and props.MessageExpiryInterval == MIN_EXPIRY_S
    assert stamps.late == 3
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "room" in said[0] and "61 s" in said[0], said  # rate-limited


def test_mqtt_3_1_1_gets_no_properties_but_late_forecasts_are_counted() -> None:
    stamps = _stamps(v5=False)
    assert stamps.properties(TOPICS.quality("room"), None, 0.0) is None
    assert stamps.properties(TOPICS.forecast("room"), 0.0, 100.0) is None
    assert stamps.late == 1


def test_another_thread_gets_its_call_run_in_the_loops_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """How a Prometheus scrape gets a snapshot the loop made (MqttLink.call_soon): the job
    runs inside the loop's next poll, in the loop's thread, which the call wakes; a job
    that raises is logged, and the loop goes on."""
    import threading

    from sensorcast.agent.config import MqttConfig
    from sensorcast.agent.publish.link import MqttLink

    link = MqttLink(MqttConfig(host="127.0.0.1", port=1, client_id="calls"), "sc/pi/status")
    woken = threading.Event()
    link.wake = woken.set
    ran: list[int] = []

    def broken() -> None:
        raise RuntimeError("boom")

    caller = threading.Thread(target=lambda: [link.call_soon(broken), link.call_soon(
        lambda: ran.append(threading.get_ident()))])  # fmt: skip
    caller.start()
    caller.join(5)
    assert woken.is_set() and ran == []  # asked, not run in the caller's thread
    with caplog.at_level(logging.ERROR, logger="sensorcast.agent.publish.link"):
        link.poll(0.0)
    assert ran == [threading.get_ident()]
    assert any("another thread" in r.getMessage() for r in caplog.records)


def test_properties_are_reused_but_never_an_answers_correlation() -> None:
    """Made once per topic while the expiry stays (filling paho's Properties costs ~50 us);
    an answer's correlation data stays that answer's."""
    stamps = _stamps()
    now = 5_000.0
    first = stamps.properties(TOPICS.forecast("room"), now, now)
    assert first is not None and stamps.properties(TOPICS.forecast("room"), now, now) is first
    later = stamps.properties(TOPICS.forecast("room"), now - 30, now)
    assert later is not first and later is not None and later.MessageExpiryInterval == 30
    answer = stamps.properties("req/inbox", None, now, "model_state", b"corr-1")
    assert answer is not None and answer.CorrelationData == b"corr-1"
    again = stamps.properties("req/inbox", None, now, "model_state", b"corr-2")
    assert again is not None and again.CorrelationData == b"corr-2"
    state = stamps.properties(TOPICS.model_state, None, now)
    assert state is not None and not hasattr(state, "CorrelationData")
