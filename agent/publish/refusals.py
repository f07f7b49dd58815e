"""Why a broker connection failed, in words that name the config key to fix.

:class:`~sensorcast.agent.publish.link.MqttLink` finds out *that* the broker refused or
never answered; this module says what it most likely means (the one-line errors and log
lines of DESIGN.md's "Errors").
"""

from __future__ import annotations

from typing import Any

from sensorcast.agent.config import MqttConfig
from sensorcast.agent.errors import PublishError

__all__ = ["hint", "none_accepted", "refused", "unanswered", "wrong_protocol"]

#: CONNACK reason (3.1.1's return code 1): the broker does not speak this MQTT version.
UNSUPPORTED_PROTOCOL = 0x84


def unanswered(where: str, cfg: MqttConfig, *, closed: bool, mqtt311_only: bool) -> PublishError:
    """The error for a CONNECT that got no CONNACK within ``cfg.connect_timeout_s``.

    ``where`` names the broker; ``closed``: the broker hung up rather than stay silent;
    ``mqtt311_only``: it did answer a 3.1.1 probe after ignoring MQTT 5.
    """
    if mqtt311_only:
        return PublishError(
            f"{where} did not answer an MQTT 5 CONNECT but answers MQTT 3.1.1: it "
            'does not speak MQTT 5; set mqtt.protocol = "3.1.1"'
        )
    if closed and cfg.tls:  # TLS 1.3: a missing client certificate shows here
        return PublishError(
            f"TLS with {where}: the broker closed the connection without answering; "
            "does it want a client certificate (mqtt.cert_file, mqtt.key_file)? "
            "See its log"
        )
    if closed:
        return PublishError(
            f"{where} closed the connection without answering; is it an MQTT broker? See its log"
        )
    return PublishError(
        f"{where} did not answer within {cfg.connect_timeout_s:g} s "
        "(mqtt.connect_timeout_s); is it an MQTT broker?"
    )


def refused(where: str, reason: Any, protocol: str) -> str:
    """What to say when the broker ``where`` refused the CONNECT with ``reason`` (a
    failing paho ``ReasonCode``); ``protocol``: ``mqtt.protocol``."""
    if reason.value == UNSUPPORTED_PROTOCOL:
        return f"{where} {wrong_protocol(protocol)}"
    return f"{where} refused the connection: {reason}; {hint(reason)}"


def none_accepted(errors: list[str]) -> PublishError:
    """The start-up error when no broker of ``mqtt.url`` accepted: each broker's reason,
    in the order they were tried, on one line."""
    if len(errors) == 1:
        return PublishError(errors[0])
    listed = " ".join(f"({n}) {e.rstrip('.')}." for n, e in enumerate(errors, 1))
    return PublishError(f"no MQTT broker of mqtt.url accepted the connection: {listed}")


def wrong_protocol(protocol: str) -> str:
    """What to say when the broker refuses the MQTT version (CONNACK 0x84, or 3.1.1's 1)."""
    other = "3.1.1" if protocol == "5" else "5"
    return (
        f"does not speak MQTT {protocol} (it refused the protocol version); "
        f'set mqtt.protocol = "{other}"'
    )


def hint(reason: Any) -> str:
    """The config key to look at for a refused connection (MQTT 5 reason codes; paho maps
    3.1.1's return codes onto them)."""
    value = reason.value
    if value == 0x85:  # client identifier not valid
        return "check mqtt.client_id"
    if value in (0x86, 0x87, 0x8C):  # bad user name or password, not authorized, bad auth
        return "check mqtt.username and the password"
    if value in (0x88, 0x89):  # server unavailable, busy
        return "the broker is unavailable or busy; see its log"
    return "see the broker's log"
