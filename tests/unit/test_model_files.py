"""Model files that are not what they claim: too big, not a file, not TFLite, and `info`
writing into a pipe whose reader went away. The hostile files are read by `sensorcast info`
in a child process under a memory limit, so a reader that would slurp them fails the test
instead of the machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sensorcast.agent.errors import ModelError
from sensorcast.agent.forecast.manifest import DEFAULT_MAX_BUNDLE_BYTES, read_bundle

from tests.support.agents import run_cli
from tests.support.configs import agent_config, topic_stream
from tests.support.paths import REPO

DEMO = REPO / "examples" / "demo" / "room.tflite"
#: Address space of a child reading a hostile file, bytes: room for Python, not for the file.
CHILD_MEMORY = 1024 * 2**20
# Runs a command and writes its peak RSS (KiB) to a file. The measuring has to happen in a
# small process: a child forked from this one (TensorFlow loaded by other tests: 500+ MiB)
# starts with this process's RSS as its own high-water mark, even after exec.
MEASURE = """
import os, resource, subprocess, sys
report, limit, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
code = subprocess.call(cmd)
with open(report, "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code if code >= 0 else 128 - code)
"""


def info(*args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """``sensorcast info ARGS`` in a child process limited to :data:`CHILD_MEMORY` of
    address space; the result and the child's peak resident memory in bytes."""
    cmd = [sys.executable, "-m", "sensorcast.agent", "info", *args]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "maxrss"
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, str(report), str(CHILD_MEMORY), *cmd],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        peak_kib = int(report.read_text())
    return subprocess.CompletedProcess(cmd, done.returncode, done.stdout, done.stderr), (
        peak_kib * 1024
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a failed command (and that there is only that line)."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sensorcast: error: model "), lines
    return lines[0]


def test_a_2_gib_sparse_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    """It made `info` and `check` take 4 GB of memory for 8 s: an OOM on a Pi."""
    big = tmp_path / "big.tflite"
    with big.open("wb") as f:
        f.write(b"\x1c\0\0\0TFL3")  # a TFLite header: only the size is wrong
        f.truncate(2 * 2**30)  # sparse: no disk used
    assert big.stat().st_blocks * 512 < 2**20
    result, peak = info(str(big))
    line = one_line(result)
    assert "is 2147483648 bytes (2 GiB), more than the 67108864-byte (64 MiB) limit" in line
    assert "[models] max_bytes" in line and "--max-bytes" in line
    assert peak < 200 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"


def test_a_large_file_without_a_tflite_header_says_so_first(tmp_path: Path) -> None:
    big = tmp_path / "disk.img"
    with big.open("wb") as f:
        f.truncate(2 * 2**30)
    result, peak = info(str(big))
    assert "not a TFLite model (no TFL3 identifier at bytes 4..8)" in one_line(result)
    assert peak < 200 * 2**20


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda tmp: Path("/dev/zero"), "is a character device, not a model file"),
        (lambda tmp: tmp, "is a directory, not a model file"),
        (lambda tmp: (os.mkfifo(tmp / "fifo"), tmp / "fifo")[1], "is a named pipe (FIFO)"),
    ],
    ids=["dev-zero", "directory", "fifo"],
)
def test_a_device_a_directory_or_a_fifo_as_model_says_what_it_is(
    tmp_path: Path, make: object, what: str
) -> None:
    path: Path = make(tmp_path)  # type: ignore[operator]
    result, peak = info(str(path))
    line = one_line(result)
    assert f"model {path}: {what}" in line and "file not found" not in line
    assert "sensorcast convert" in line  # and the fix
    assert peak < 200 * 2**20
    with pytest.raises(ModelError, match=what.replace("(", r"\(").replace(")", r"\)")):
        read_bundle(path)  # the reader itself, as start, check, hot reload and updates call it


def test_a_socket_as_model_says_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(ModelError, match=f"model {path}: is a socket, not a model file"):
            read_bundle(path)


def test_a_keras_file_given_as_model_is_named(tmp_path: Path) -> None:
    result, _ = info(str(REPO / "examples" / "demo" / "room.keras"))
    assert "not a TFLite model (it looks like a zip archive: a .keras model?)" in one_line(result)
    csv = tmp_path / "room.csv"
    csv.write_bytes((REPO / "examples" / "demo" / "room.csv").read_bytes())
    result, _ = info(str(csv))
    assert "not a TFLite model (no TFL3 identifier at bytes 4..8)" in one_line(result)
    empty = tmp_path / "empty.tflite"
    empty.touch()
    with pytest.raises(ModelError, match=r"not a TFLite model \(the file is empty\)"):
        read_bundle(empty)


def test_max_bytes_is_honoured_by_the_reader_and_info(tmp_path: Path) -> None:
    size = DEMO.stat().st_size
    assert DEFAULT_MAX_BUNDLE_BYTES == 64 * 2**20
    assert read_bundle(DEMO, max_bytes=size).sha256  # the limit is inclusive
    with pytest.raises(ModelError, match=f"is {size} bytes .*, more than the {size - 1}-byte"):
        read_bundle(DEMO, max_bytes=size - 1)
    result, _ = info("--max-bytes", str(size - 1), str(DEMO))
    assert f"more than the {size - 1}-byte" in one_line(result)
    result, _ = info("--max-bytes", str(size), str(DEMO))
    assert result.returncode == 0 and "window:        24 steps x 300 s" in result.stdout
    result, _ = info("--max-bytes", "0", str(DEMO))
    assert result.returncode == 2 and "--max-bytes: '0' is not a positive number of bytes" in (
        result.stderr
    )


def test_models_max_bytes_in_the_config_reaches_the_reader(tmp_path: Path) -> None:
    """`[models] max_bytes` bounds what `check` (and start and hot reload: the same
    load_model) reads: a valid bundle padded to 1.5 MiB loads by default, not under 1 MiB."""
    padded = tmp_path / "padded.tflite"
    padded.write_bytes(DEMO.read_bytes() + bytes(1536 * 1024))  # the flatbuffer ignores a tail
    streams = [topic_stream(padded, "x")]
    config = agent_config(tmp_path, device="t", port=1, streams=streams, name="c.toml")
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    agent_config(
        tmp_path, device="t", port=1, models={"max_bytes": 1048576}, streams=streams, name="c.toml"
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"stream room: model {padded}: is {padded.stat().st_size} bytes" in result.stderr
    assert "more than the 1048576-byte (1 MiB) limit" in result.stderr


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_info_into_a_pipe_whose_reader_went_away(as_json: bool) -> None:
    """`sensorcast info FILE | head` ended in a BrokenPipeError traceback. A real pipe whose
    read end is closed before the child writes: the write fails with EPIPE every time."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sensorcast.agent", "info", str(DEMO),
             *(["--json"] if as_json else [])],
            stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.PIPE, text=True,
            timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.stderr == ""
    assert done.returncode == 141  # 128 + SIGPIPE, as a shell reports `yes | head`


def test_info_piped_into_head_prints_what_head_wants() -> None:
    done = subprocess.run(
        f"{sys.executable} -m sensorcast.agent info {DEMO} | head -n 2", shell=True,
        capture_output=True,
        text=True, timeout=120, check=False, executable="/bin/sh",
    )  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert done.stdout.splitlines()[1] == "window:        24 steps x 300 s"
