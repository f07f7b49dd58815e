"""The rollout gate: expressions parsed once (a bad one is one clear line), evaluated on a
device's quality message (its live report with the shadow's inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest
from sensorcast.agent.errors import ConfigError
from sensorcast.agent.fleet.gate import DEFAULT_GATE, Condition, failures, measure, parse_gate


def _quality(
    mae_ratio: Optional[float] = 1.0,
    live_skill: Optional[float] = 0.4,
    shadow_skill: Optional[float] = 0.38,
    **shadow: Any,
) -> dict[str, Any]:
    body = {"model": "room@sha", "mae_ratio": mae_ratio, "skill": {"last_value": shadow_skill},
            "coverage": 0.8, "errors": 0, "forecasts": 120, "drift": False, **shadow}  # fmt: skip
    return {"model": "room@live", "skill": {"last_value": live_skill}, "shadow": body}


def test_expressions_parse() -> None:
    assert parse_gate("mae_ratio<=1.05") == Condition("mae_ratio", "<=", 1.05)
    assert parse_gate(" coverage >= 0.7 ") == Condition("coverage", ">=", 0.7)
    assert parse_gate("errors<1") == Condition("errors", "<", 1.0)
    assert parse_gate("skill_drop<=5e-2") == Condition("skill_drop", "<=", 0.05)
    assert str(parse_gate("mae_ratio<=1.05")) == "mae_ratio<=1.05"
    assert [str(parse_gate(g)) for g in DEFAULT_GATE] == list(DEFAULT_GATE)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("mae_ratio", "write METRIC OP NUMBER"),
        ("mae_ratio=>1", "write METRIC OP NUMBER"),
        ("mae_ratio<=", "write METRIC OP NUMBER"),
        ("mae<=1", "unknown metric 'mae'; one of mae_ratio, skill_drop"),
        ("mae_ratio<=1.0.5", "not a finite number"),
        ("mae_ratio<=inf", "write METRIC OP NUMBER"),
        ("", "write METRIC OP NUMBER"),
    ],
)
def test_a_bad_expression_is_one_line_naming_it(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_gate(text)
    message = str(caught.value)
    assert message.startswith(f"--gate {text!r}") and says in message
    assert "\n" not in message


def test_the_gate_says_why_it_fails() -> None:
    gate = [parse_gate("mae_ratio<=1.05"), parse_gate("coverage>=0.9")]
    assert failures(gate, _quality(mae_ratio=1.02, coverage=0.95)) == []
    assert failures(gate, _quality(mae_ratio=3.41, coverage=0.5)) == [
        "mae_ratio 3.41 > 1.05",
        "coverage 0.5 < 0.9",
    ]


def test_skill_drop_is_the_live_skill_minus_the_shadows() -> None:
    assert measure("skill_drop", _quality(live_skill=0.4, shadow_skill=0.3)) == pytest.approx(0.1)
    assert measure("skill_drop", _quality(live_skill=0.4, shadow_skill=0.5)) == pytest.approx(-0.1)
    assert measure("skill_drop", _quality(shadow_skill=None)) is None
    assert failures([parse_gate("skill_drop<=0.05")], _quality(0.9, 0.4, 0.3)) == [
        "skill_drop 0.1 > 0.05"
    ]


def test_a_metric_the_device_did_not_report_fails_the_gate_saying_so() -> None:
    gate = [parse_gate("coverage>=0.7")]
    assert failures(gate, _quality(coverage=None)) == [
        "coverage unknown (the device reported none)"
    ]
    assert measure("mae_ratio", {"shadow": None}) is None
    assert measure("errors", {"shadow": {"errors": True}}) is None  # a bool is no count
    assert measure("coverage", {"shadow": {"coverage": float("nan")}}) is None
    assert failures(gate, {}) == ["coverage unknown (the device reported none)"]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--gate", "mae<=1"], "--gate 'mae<=1': unknown metric 'mae'"),
        (["--waves", "50,10"], "--waves '50,10': give increasing cumulative percentages"),
        (["--soak", "soon"], "--soak 'soon': not a duration"),
        (["--max-failed", "2"], "--max-failed '2': give a share between 0 and 1"),
        (["--signature", "abc"], "--signature abc: not a base64 Ed25519 signature"),
    ],
)
def test_the_command_refuses_bad_flags_in_one_line_before_connecting(
    flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from sensorcast.agent.fleet.cli import main

    from tests.support.updates import DEMO

    sign = [] if "--signature" in flags else ["--unsigned"]
    # Port 9 (discard) on loopback: nothing listens; a flag error comes before any connect.
    argv = ["rollout", str(DEMO), "--stream", "room", *sign, *flags, "--url", "mqtt://127.0.0.1:9"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err, err


def test_the_command_refuses_a_file_that_is_no_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sensorcast.agent.fleet.cli import main

    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    assert main(["rollout", str(junk), "--stream", "room", "--unsigned"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"model {junk}" in err and "\n" not in err, err


def test_signing_with_a_private_key_verifies_with_its_public_key(tmp_path: Path) -> None:
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )  # fmt: skip
    from sensorcast.agent.fleet.signing import load_signature, sign

    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "k.pem"
    pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    signature = sign(b"bundle", pem)
    key.public_key().verify(base64.b64decode(signature), b"bundle")  # raises if not
    (tmp_path / "sig.b64").write_text(signature + "\n")
    (tmp_path / "sig.raw").write_bytes(base64.b64decode(signature))
    assert load_signature(signature) == signature
    assert load_signature(f"@{tmp_path / 'sig.b64'}") == signature
    assert load_signature(f"@{tmp_path / 'sig.raw'}") == signature


def test_a_key_that_cannot_sign_is_one_line(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )  # fmt: skip
    from sensorcast.agent.fleet.signing import load_signature, sign

    ec = tmp_path / "ec.pem"
    ec.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        sign(b"x", ec)
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        sign(b"x", tmp_path / "junk.pem")
    with pytest.raises(ConfigError, match="cannot read it"):
        sign(b"x", tmp_path / "none.pem")
    with pytest.raises(ConfigError, match="cannot read it"):
        load_signature(f"@{tmp_path / 'none.sig'}")
