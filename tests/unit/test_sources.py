"""Sources against real files, real commands and real pipes: no mocks."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Optional, Protocol, TypeVar

import pytest
from sensorcast.agent.config import parse_config
from sensorcast.agent.errors import ConfigError, SourceError
from sensorcast.agent.sources import (
    SOURCE_TYPES,
    CommandSource,
    FileSource,
    MqttJsonSource,
    MqttValueSource,
    PolledSource,
    Reading,
    StdinSource,
)
from sensorcast.agent.sources.parse import parse_json_reading, parse_number, parse_w1_slave
from sensorcast.agent.sources.registry import build_sources, source_types
from sensorcast.agent.sources.stdin import MAX_LINE

FEATURES = ("temperature", "humidity")
INDEXED = tuple(enumerate(FEATURES))
DEADLINE_S = 1.5  # generous: every wait below normally ends in tens of milliseconds

W1_GOOD = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
W1_NEGATIVE = "5e ff 4b 46 7f ff 02 10 d1 : crc=d1 YES\n5e ff 4b 46 7f ff 02 10 d1 t=-1062\n"
W1_CRC_NO = "72 01 4b 46 7f ff 0e 10 57 : crc=a4 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
W1_POWER_ON = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n"
W1_ZEROS = "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n"


class Collector:
    """A sink that records batches and lets a test wait for them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.readings: list[Reading] = []

    def __call__(self, batch: list[Reading]) -> None:
        with self._cond:
            self.readings.extend(batch)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = DEADLINE_S) -> list[Reading]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.readings) >= n, timeout)
            assert ok, f"waited {timeout} s for {n} readings, got {self.readings}"
            return list(self.readings)

    def wait_for_value(self, value: float, timeout: float = DEADLINE_S) -> list[Reading]:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: any(math.isclose(r.value, value) for r in self.readings), timeout
            )
            assert ok, f"waited {timeout} s for a reading of {value}, got {self.readings}"
            return list(self.readings)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.005)


P = TypeVar("P", bound=PolledSource)


class Starter(Protocol):
    def __call__(self, source: P) -> P: ...


@pytest.fixture
def started() -> Iterator[Starter]:
    """Start polled sources and close them whatever the test's outcome."""
    sources: list[PolledSource] = []

    def start(source: P) -> P:
        sources.append(source)
        source.start()
        return source

    yield start
    for s in sources:
        s.close()
        assert not s.running


# --- parsing ---------------------------------------------------------------------------


def test_json_reading_with_all_features_and_ts() -> None:
    readings, rejects = parse_json_reading(
        b'{"ts": 1700000000.5, "temperature": 21.4, "humidity": 40, "other": "x"}',
        99.0,
        INDEXED,
        3,
    )
    assert readings == [Reading(3, 0, 1700000000.5, 21.4), Reading(3, 1, 1700000000.5, 40.0)]
    assert rejects == []
    assert all(type(r.value) is float and type(r.ts) is float for r in readings)


def test_json_reading_without_ts_uses_arrival_and_keeps_good_features() -> None:
    readings, rejects = parse_json_reading('{"humidity": 41.5}', 123.0, INDEXED, 0)
    assert readings == [Reading(0, 1, 123.0, 41.5)]
    assert rejects == ["missing_feature"]
    assert "temperature" in rejects[0].detail


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not_json"),
        (b"\xff\xfe{", "not_json"),
        (b"[" * 100_000, "not_json"),
        (b"", "not_json"),
        (b"[1, 2]", "not_object"),
        (b"21.4", "not_object"),
        (b'{"ts": "yesterday", "temperature": 1, "humidity": 2}', "bad_timestamp"),
        (b'{"ts": true, "temperature": 1, "humidity": 2}', "bad_timestamp"),
        (b'{"ts": NaN, "temperature": 1, "humidity": 2}', "bad_timestamp"),
        (b'{"ts": Infinity, "temperature": 1, "humidity": 2}', "bad_timestamp"),
    ],
)
def test_json_reading_whole_payload_rejects(payload: bytes, reason: str) -> None:
    assert parse_json_reading(payload, 1.0, INDEXED, 0) == ([], [reason])


def test_json_reading_feature_rejects() -> None:
    readings, rejects = parse_json_reading(
        b'{"temperature": true, "humidity": null}', 5.0, INDEXED, 0
    )
    assert readings == []
    assert rejects == ["bad_value", "missing_feature"]
    readings, rejects = parse_json_reading(b'{"temperature": "21", "humidity": 3}', 5.0, INDEXED, 0)
    assert readings == [Reading(0, 1, 5.0, 3.0)] and rejects == ["bad_value"]


def test_json_reading_lets_non_finite_values_through_for_the_window() -> None:
    readings, rejects = parse_json_reading(b'{"temperature": NaN}', 5.0, INDEXED[:1], 0)
    assert rejects == [] and math.isnan(readings[0].value)


@pytest.mark.parametrize(
    ("text", "value"),
    [("21.4", 21.4), (" 21.4\n", 21.4), ("-3e-2", -0.03), (b"42\n", 42.0), ("+7", 7.0)],
)
def test_parse_number(text: str, value: float) -> None:
    assert parse_number(text) == value


def test_parse_number_lets_nan_and_inf_through() -> None:
    assert math.isnan(parse_number("nan"))
    assert parse_number("-inf") == -math.inf


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        (" \n", "empty"),
        ("abc", "not_number"),
        ("21.4 C", "not_number"),
        ("21.4\n22.0", "not_number"),
        ("1_000", "not_number"),
        (b"\xff21", "not_number"),
        ('"21.4"', "not_number"),
    ],
)
def test_parse_number_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$"):
        parse_number(text)


def test_parse_w1_slave() -> None:
    assert parse_w1_slave(W1_GOOD) == 23.125
    assert parse_w1_slave(W1_GOOD.encode()) == 23.125
    assert parse_w1_slave(W1_NEGATIVE) == -1.062


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (W1_CRC_NO, "crc"),
        (W1_POWER_ON, "power_on_reset"),
        (W1_ZEROS, "no_sensor"),
        ("", "not_w1_slave"),
        ("garbage\n", "not_w1_slave"),
        (W1_GOOD.splitlines()[0], "not_w1_slave"),
        (W1_GOOD.replace("t=23125", "t=23.1"), "not_w1_slave"),
        (W1_GOOD.replace("t=23125", "t="), "not_w1_slave"),
        (W1_GOOD.replace("0e 10 57 t", "zz 10 57 t"), "not_w1_slave"),
    ],
)
def test_parse_w1_slave_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$"):
        parse_w1_slave(text)


# --- MQTT ------------------------------------------------------------------------------


def test_mqtt_json_source_counts_and_hands_on() -> None:
    sink = Collector()
    source = MqttJsonSource(1, "room", FEATURES, "sensors/room", sink)
    source.handle(b'{"ts": 10, "temperature": 20.5, "humidity": 40}', 99.0)
    source.handle(b'{"temperature": 21}', 100.0)
    source.handle(b"oops", 101.0)
    assert sink.readings == [
        Reading(1, 0, 10.0, 20.5),
        Reading(1, 1, 10.0, 40.0),
        Reading(1, 0, 100.0, 21.0),
    ]
    assert source.messages == 3
    assert source.rejected == {"missing_feature": 1, "not_json": 1}


def test_mqtt_value_source_takes_plain_numbers_and_value_objects() -> None:
    sink = Collector()
    source = MqttValueSource(0, "room", FEATURES, 1, "sensors/room/humidity", sink)
    source.handle(b"41.5", 100.0)
    source.handle(b" 42\n", 101.0)
    source.handle(b'{"ts": 90.5, "value": 43.25}', 102.0)
    source.handle(b' {"value": 44}', 103.0)
    assert sink.readings == [
        Reading(0, 1, 100.0, 41.5),
        Reading(0, 1, 101.0, 42.0),
        Reading(0, 1, 90.5, 43.25),
        Reading(0, 1, 103.0, 44.0),
    ]
    assert source.rejected == {} and source.messages == 4


def test_mqtt_value_source_rejects_bad_payloads() -> None:
    sink = Collector()
    source = MqttValueSource(0, "room", FEATURES, 0, "sensors/room/temperature", sink)
    for payload in (b"", b"ON", b"21.4 C", b'{"value": true}', b'{"temp": 21}', b"{oops", b"[1]"):
        source.handle(payload, 100.0)
    assert sink.readings == []
    assert source.rejected == {
        "empty": 1,
        "not_number": 3,
        "bad_value": 1,
        "missing_feature": 1,
        "not_json": 1,
    }


def test_mqtt_value_source_checks_its_feature_index() -> None:
    with pytest.raises(ConfigError, match="out of range"):
        MqttValueSource(0, "room", FEATURES, 2, "t", Collector())


# --- polling ---------------------------------------------------------------------------


class Scripted(PolledSource):
    """A real polled source whose reads follow a script (called on its own thread)."""

    type_name = "scripted"

    def __init__(
        self,
        sink: Callable[[list[Reading]], None],
        interval_s: float,
        script: Callable[[int], list[Reading]],
        max_backoff_s: float = 60.0,
    ) -> None:
        super().__init__(0, "room", FEATURES, sink, interval_s, max_backoff_s)
        self.calls: list[float] = []
        self._script = script

    def read_once(self, now: float) -> list[Reading]:
        self.calls.append(time.monotonic())
        return self._script(len(self.calls))


def test_polling_keeps_its_phase_when_reads_are_slow(started: Starter) -> None:
    def slow(n: int) -> list[Reading]:
        time.sleep(0.03)
        return [Reading(0, 0, float(n), float(n))]

    sink = Collector()
    source = started(Scripted(sink, 0.05, slow))
    sink.wait_for(7)
    calls = source.calls[:7]
    # Drifting by the read time would put 6 intervals at 0.48 s.
    assert 0.29 <= calls[-1] - calls[0] < 0.4


def test_failures_back_off_exponentially_up_to_the_cap(
    started: Starter,
) -> None:
    def failing(n: int) -> list[Reading]:
        if n <= 4:
            raise OSError(5, "Input/output error")
        return [Reading(0, 0, 1.0, 1.0)]

    sink = Collector()
    source = started(Scripted(sink, 0.02, failing, max_backoff_s=0.1))
    wait_until(lambda: source.failures >= 1, "the first failure")
    assert source.failing and source.last_error == "Input/output error"
    sink.wait_for(1)
    assert not source.failing and source.failures == 4
    calls = source.calls
    gaps = [b - a for a, b in zip(calls, calls[1:5])]
    # 0.04, 0.08, then capped at 0.1, 0.1: each wait is at least as long as promised.
    assert gaps[0] >= 0.039 and gaps[1] >= 0.079 and gaps[2] >= 0.099 and gaps[3] >= 0.099
    assert max(gaps) < 0.3


def test_a_bad_reading_is_not_a_failure(started: Starter) -> None:
    def bad_then_good(n: int) -> list[Reading]:
        if n <= 2:
            raise ValueError("not_number")
        return [Reading(0, 0, 1.0, 1.0)]

    sink = Collector()
    source = started(Scripted(sink, 0.02, bad_then_good))
    sink.wait_for(1)
    assert source.rejected == {"not_number": 2}
    assert source.failures == 0 and not source.failing


def test_no_exception_kills_the_thread(started: Starter) -> None:
    def buggy(n: int) -> list[Reading]:
        if n == 1:
            raise RuntimeError("a bug")
        if n == 2:
            raise KeyError("another")
        return [Reading(0, 0, float(n), 1.0)]

    batches = Collector()

    def flaky_sink(batch: list[Reading]) -> None:
        if batch[0].ts == 3.0:
            raise RuntimeError("sink broke")
        batches(batch)

    source = started(Scripted(flaky_sink, 0.01, buggy, max_backoff_s=0.02))
    readings = batches.wait_for(1)
    assert readings[0].ts == 4.0
    assert source.running and source.failures == 2 and not source.failing


def test_close_is_prompt_between_reads(started: Starter) -> None:
    sink = Collector()
    source = started(Scripted(sink, 30.0, lambda n: [Reading(0, 0, 1.0, 1.0)]))
    sink.wait_for(1)
    t0 = time.monotonic()
    source.close()
    assert time.monotonic() - t0 < 0.5 and not source.running


def test_polled_source_checks_its_interval() -> None:
    with pytest.raises(ConfigError, match="interval_s"):
        Scripted(Collector(), 0.0, lambda n: [])


# --- files -----------------------------------------------------------------------------


def test_file_source_rereads_the_file_and_scales(tmp_path: Path, started: Starter) -> None:
    path = tmp_path / "temp1_input"
    path.write_text("21500\n")
    sink = Collector()
    t0 = time.time()
    started(FileSource(2, "room", FEATURES, 0, path, sink, 0.02, scale=0.001, offset=-0.5))
    first = sink.wait_for(1)[0]
    assert first.stream == 2 and first.feature == 0
    assert math.isclose(first.value, 21.0) and t0 <= first.ts <= time.time()
    path.write_text("23000\n")
    sink.wait_for_value(22.5)


def test_file_source_fails_while_the_file_is_gone_and_recovers(
    tmp_path: Path, started: Starter
) -> None:
    path = tmp_path / "in_temp_input"
    path.write_text("20.0")
    sink = Collector()
    source = started(FileSource(0, "room", FEATURES, 1, str(path), sink, 0.01, max_backoff_s=0.04))
    sink.wait_for(1)
    path.unlink()
    wait_until(lambda: source.failing, "the source to fail")
    assert source.failures >= 1 and source.last_error is not None
    assert "No such file" in source.last_error and str(path) in source.last_error
    path.write_text("25.0")
    sink.wait_for_value(25.0)
    wait_until(lambda: not source.failing, "the source to recover")
    assert source.rejected == {}


def test_file_source_bad_contents_are_rejected_not_failures(
    tmp_path: Path, started: Starter
) -> None:
    path = tmp_path / "value"
    path.write_text("")
    sink = Collector()
    source = started(FileSource(0, "room", FEATURES, 0, path, sink, 0.01))
    wait_until(lambda: source.rejected.get("empty", 0) >= 1, "an empty-file reject")
    path.write_text("n/a\n")
    wait_until(lambda: source.rejected.get("not_number", 0) >= 1, "a not_number reject")
    assert not source.failing and source.failures == 0
    path.write_text("1.5")
    sink.wait_for_value(1.5)


def test_file_source_reads_a_w1_slave_file(tmp_path: Path, started: Starter) -> None:
    path = tmp_path / "28-0316a2798aff" / "w1_slave"
    path.parent.mkdir()
    path.write_text(W1_POWER_ON)
    sink = Collector()
    source = started(FileSource(0, "room", FEATURES, 0, path, sink, 0.01, parser="w1_slave"))
    wait_until(lambda: "power_on_reset" in source.rejected, "a power-on reject")
    path.write_text(W1_GOOD)
    sink.wait_for_value(23.125)
    path.write_text(W1_CRC_NO)
    wait_until(lambda: "crc" in source.rejected, "a crc reject")
    path.write_text(W1_NEGATIVE)
    readings = sink.wait_for_value(-1.062)
    assert {r.value for r in readings} == {23.125, -1.062}
    assert not source.failing


def test_file_source_resolves_a_glob_to_exactly_one_file(tmp_path: Path, started: Starter) -> None:
    (tmp_path / "hwmon3").mkdir()
    (tmp_path / "hwmon3" / "temp1_input").write_text("45000")
    sink = Collector()
    source = started(
        FileSource(
            0,
            "cpu",
            FEATURES,
            0,
            str(tmp_path / "hwmon*" / "temp1_input"),
            sink,
            0.01,
            scale=0.001,
            max_backoff_s=0.02,
        )
    )
    sink.wait_for_value(45.0)
    (tmp_path / "hwmon4").mkdir()
    (tmp_path / "hwmon4" / "temp1_input").write_text("50000")
    wait_until(lambda: source.failing, "an ambiguous pattern to fail")
    assert source.last_error is not None and "2 files match" in source.last_error


def test_file_source_rejects_an_unknown_parser(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="w1_slave"):
        FileSource(0, "room", FEATURES, 0, tmp_path / "x", Collector(), 1.0, parser="csv")


# --- commands --------------------------------------------------------------------------


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_command_source_reads_one_number(started: Starter) -> None:
    sink = Collector()
    t0 = time.time()
    source = started(CommandSource(0, "room", FEATURES, 1, py("print(21.5)"), sink, 0.05))
    assert source.format == "number"
    reading = sink.wait_for(1)[0]
    assert reading[:2] == (0, 1) and reading.value == 21.5 and reading.ts >= t0


def test_command_source_reads_a_json_object(started: Starter) -> None:
    out = json.dumps({"ts": 1700000000, "temperature": 20.25, "humidity": 55, "x": "y"})
    sink = Collector()
    source = started(CommandSource(0, "room", FEATURES, None, py(f"print({out!r})"), sink, 0.05))
    assert source.format == "json"
    assert sink.wait_for(2)[:2] == [
        Reading(0, 0, 1700000000.0, 20.25),
        Reading(0, 1, 1700000000.0, 55.0),
    ]


def test_command_source_json_keeps_good_features(started: Starter) -> None:
    sink = Collector()
    code = "print('{\"humidity\": 50}')"
    source = started(CommandSource(0, "room", FEATURES, None, py(code), sink, 0.05))
    reading = sink.wait_for(1)[0]
    assert reading.feature == 1 and reading.value == 50.0
    assert source.rejected.get("missing_feature", 0) >= 1 and not source.failing


def test_command_source_bad_output_is_a_bad_reading(started: Starter) -> None:
    sink = Collector()
    source = started(CommandSource(0, "room", FEATURES, 0, py("print('temp=21.4')"), sink, 0.05))
    wait_until(lambda: "not_number" in source.rejected, "a not_number reject")
    assert not source.failing and sink.readings == []


def test_command_source_non_zero_exit_is_a_failure(started: Starter) -> None:
    code = "import sys; print(21); sys.stderr.write('sensor not found'); sys.exit(1)"
    source = started(CommandSource(0, "room", FEATURES, 0, py(code), Collector(), 0.05))
    wait_until(lambda: source.failing, "the source to fail")
    assert source.last_error == "exit status 1: sensor not found"


def test_command_source_missing_program_is_a_failure(tmp_path: Path, started: Starter) -> None:
    missing = str(tmp_path / "no-such-reader")
    source = started(CommandSource(0, "room", FEATURES, 0, [missing], Collector(), 0.05))
    wait_until(lambda: source.failing, "the source to fail")
    assert source.last_error is not None and "No such file" in source.last_error


def test_command_source_kills_a_command_that_overruns_and_its_children(
    tmp_path: Path, started: Starter
) -> None:
    pid_file = tmp_path / "child.pid"
    # sleep, started by the shell, inherits stdout: killing only the shell would
    # leave the pipe open and the read blocked until sleep exits. (A shell, not
    # Python, so that a loaded machine still starts it well within the timeout.)
    script = 'sleep 30 & echo $! > "$0"; wait'
    sink = Collector()
    source = started(
        # A long interval: no second run (and second grandchild) while the test looks.
        CommandSource(
            0, "room", FEATURES, 0, ["/bin/sh", "-c", script, str(pid_file)], sink, 1.0, 0.3
        )
    )
    wait_until(lambda: source.failing, "the timeout")
    assert source.last_error == "timed out after 0.3 s"
    grandchild = int(pid_file.read_text())
    wait_until(lambda: not alive(grandchild), "the grandchild to be killed", timeout=0.5)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for a parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_close_kills_a_running_command_promptly(tmp_path: Path, started: Starter) -> None:
    marker = tmp_path / "started"
    code = f"import time; open({str(marker)!r}, 'w').close(); time.sleep(30)"
    source = started(CommandSource(0, "room", FEATURES, 0, py(code), Collector(), 0.05, 30.0))
    wait_until(marker.exists, "the command to start")
    t0 = time.monotonic()
    source.close()
    assert time.monotonic() - t0 < 0.5 and not source.running
    assert source.failures == 0  # closing is not the sensor's fault


@pytest.mark.parametrize(
    ("feature_index", "fmt", "command", "needle"),
    [
        (None, "number", ["x"], "bound to one feature"),
        (0, "csv", ["x"], "format"),
        (0, None, [], "non-empty list"),
        (0, None, "print 1", "non-empty list"),
    ],
)
def test_command_source_config_errors(
    feature_index: Optional[int], fmt: Optional[str], command: list[str], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        CommandSource(0, "room", FEATURES, feature_index, command, Collector(), format=fmt)


# --- stdin -----------------------------------------------------------------------------


class Pipe:
    """An OS pipe: the test writes, a source reads."""

    def __init__(self) -> None:
        self.r, self._w = os.pipe()

    def write(self, data: bytes) -> None:
        os.write(self._w, data)

    def writer(self) -> int:
        return self._w

    def close_writer(self) -> None:
        if self._w >= 0:
            os.close(self._w)
            self._w = -1


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    p = Pipe()
    yield p
    p.close_writer()  # EOF: a reader still blocked wakes up and ends
    os.close(p.r)


def test_stdin_source_reads_lines_until_eof(pipe: Pipe) -> None:
    sink = Collector()
    source = StdinSource(0, "room", FEATURES, sink, os.fdopen(pipe.r, "rb", closefd=False))
    source.start()
    t0 = time.time()
    pipe.write(b'{"ts": 10, "temperature": 20.5, "humidity": 40}\n\n  \n')
    pipe.write(b'{"temperature": 21}\nnot json\n[1]\n{"humidity": "wet"}\n')
    pipe.write(b'{"ts": 12, "humidity": 41}')  # last line without a newline
    pipe.close_writer()
    assert source.join(DEADLINE_S) and source.eof
    assert sink.readings[:2] == [Reading(0, 0, 10.0, 20.5), Reading(0, 1, 10.0, 40.0)]
    assert sink.readings[2].value == 21.0 and sink.readings[2].ts >= t0
    assert sink.readings[3] == Reading(0, 1, 12.0, 41.0)
    assert source.rejected == {
        "missing_feature": 3,
        "not_json": 1,
        "not_object": 1,
        "bad_value": 1,
    }
    assert source.lines == 8 and source.messages == 6


def test_stdin_source_reads_text_streams_and_skips_over_long_lines(pipe: Pipe) -> None:
    sink = Collector()
    source = StdinSource(0, "room", FEATURES[:1], sink, os.fdopen(pipe.r, "r", closefd=False))
    source.start()

    def feed() -> None:
        with os.fdopen(pipe.writer(), "w", closefd=False) as out:
            out.write('{"temperature": 1, "pad": "' + "x" * MAX_LINE + '"}\n')
            out.write('{"temperature": 2}\n')

    writer = threading.Thread(target=feed)
    writer.start()
    sink.wait_for(1)
    writer.join(DEADLINE_S)
    pipe.close_writer()
    assert source.join(DEADLINE_S)
    assert [rd.value for rd in sink.readings] == [2.0]
    assert source.rejected == {"line_too_long": 1}


def test_stdin_source_close_returns_while_the_stream_stays_open(pipe: Pipe) -> None:
    sink = Collector()
    source = StdinSource(0, "room", FEATURES, sink, os.fdopen(pipe.r, "rb", closefd=False))
    source.start()
    pipe.write(b'{"temperature": 1, "humidity": 2}\n')
    sink.wait_for(2)
    t0 = time.monotonic()
    source.close()  # wakes the thread waiting for input and joins it
    assert time.monotonic() - t0 < 0.5
    assert not source.running  # no thread left inside a read at interpreter exit
    pipe.write(b'{"temperature": 3, "humidity": 4}\n')
    assert len(sink.readings) == 2 and not source.eof


# --- registry --------------------------------------------------------------------------


def test_registry_names_every_source_type() -> None:
    types = SOURCE_TYPES
    assert types == {
        "mqtt": MqttJsonSource,
        "mqtt_value": MqttValueSource,
        "file": FileSource,
        "command": CommandSource,
        "stdin": StdinSource,
    }
    assert all(cls.type_name == name for name, cls in SOURCE_TYPES.items())


def test_each_source_type_declares_where_it_may_be_used() -> None:
    # In the order config messages list them.
    assert list(source_types(per_feature=True)) == ["file", "mqtt_value", "command"]
    assert list(source_types(per_feature=False)) == ["mqtt", "command", "stdin"]
    assert SOURCE_TYPES["stdin"].one_per_config is not None  # one process, one stdin
    assert SOURCE_TYPES["file"].config_keys >= {"path", "parser", "scale", "offset"}


def test_build_sources_builds_every_configured_type_through_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m.tflite").write_bytes(b"x")
    (tmp_path / "t").write_text("21.5\n")
    probe = "import json, os; print(json.dumps({'temperature': float('THE_PW' in os.environ)}))"
    cfg = parse_config(
        {
            "mqtt": {"username": "u", "password_env": "THE_PW"},
            "streams": [
                {
                    "name": "room",
                    "model": "m.tflite",
                    "input_topic": "in/room",
                    "inputs": {
                        "temperature": {"type": "file", "path": "t", "scale": 2},
                        "humidity": {"type": "mqtt_value", "topic": "in/h"},
                    },
                    "sources": [
                        {"type": "mqtt", "topic": "in/all"},
                        {"type": "command", "command": [sys.executable, "-c", probe]},
                        {"type": "stdin"},
                    ],
                }
            ],
        },
        tmp_path / "c.toml",
        {"THE_PW": "hunter2"},
    )
    monkeypatch.setenv("THE_PW", "hunter2")
    subscribed: list[str] = []
    sink = Collector()
    sources = build_sources(
        3, cfg.streams[0], FEATURES, cfg.mqtt, lambda topic, handler: subscribed.append(topic),
        sink,
    )  # fmt: skip
    assert [type(s) for s in sources] == [
        MqttJsonSource, FileSource, MqttValueSource, MqttJsonSource, CommandSource, StdinSource,
    ]  # fmt: skip
    assert subscribed == ["in/room", "in/h", "in/all"]
    assert all(s.stream == 3 and s.features == FEATURES for s in sources)
    file_source = sources[1]
    assert isinstance(file_source, FileSource)
    assert file_source.read_once(0.0)[0].value == 43.0  # scale from the config
    command = sources[4]
    assert isinstance(command, CommandSource)
    # The broker password's variable is not in the command's environment.
    assert command.read_once(0.0)[0].value == 0.0


def test_source_error_is_a_failure_for_polled_sources(
    started: Starter,
) -> None:
    def unplugged(n: int) -> list[Reading]:
        raise SourceError("device unplugged")

    source = started(Scripted(Collector(), 0.01, unplugged))
    wait_until(lambda: source.failing, "the source to fail")
    assert source.last_error == "device unplugged"


def test_stdin_source_without_a_stdin_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(SourceError, match="no stdin"):
        StdinSource(0, "room", FEATURES, Collector())
