"""A plain ``sensorcast run`` loads only what it uses (its resident memory, issue 18).

A stream reading an input topic needs no polling source (threads, ``subprocess``,
``glob``) and no package metadata (``importlib.metadata`` with zipfile, csv and email
parsing): those load on first use. And the runtime's load-time code pages, dropped from the
process after the runtime loads, come back when they run: the interpreter's answers do not
change.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.configs import agent_config, topic_stream

#: Modules a plain ``run`` (one stream on an input topic, LiteRT) must not import.
LAZY = (
    "importlib.metadata",
    "zipfile",
    "csv",
    "subprocess",
    "glob",
    "sensorcast.agent.sources.command",
    "sensorcast.agent.sources.file",
    "sensorcast.agent.sources.poll",
    "sensorcast.agent.sources.stdin",
)


def test_a_plain_run_imports_no_unused_source_type_or_metadata(
    demo_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ai_edge_litert")
    config = agent_config(
        tmp_path,
        device="small",
        state={"dir": tmp_path / "state"},
        streams=[topic_stream(demo_dir / "room.tflite", "in/room")],
    )
    # What `sensorcast run` does before it connects: the same imports, config, runtime and
    # the service's local half (models, outbox, pipeline, sources built but not started).
    code = f"""
import json, sys
from pathlib import Path
import sensorcast.agent.cli
from sensorcast.agent.config import load_config
from sensorcast.agent.forecast.runtime import load_runtime
from sensorcast.agent.service import Service
service = Service(load_config(Path({str(config)!r})), load_runtime("litert"))
service.open()
service.close()
print(json.dumps(sorted(sys.modules)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "sensorcast.agent.sources.mqtt" in loaded  # the input topic's source was built
    assert sorted(loaded.intersection(LAZY)) == []


def test_the_source_types_still_load_on_first_use() -> None:
    from sensorcast.agent.sources.registry import SOURCE_TYPES, source_types

    assert list(SOURCE_TYPES) == ["file", "mqtt_value", "mqtt", "command", "stdin"]
    assert "command" in SOURCE_TYPES and "nope" not in SOURCE_TYPES
    assert SOURCE_TYPES["command"].__name__ == "CommandSource"
    assert set(source_types(per_feature=True)) <= set(SOURCE_TYPES)
    with pytest.raises(KeyError):
        SOURCE_TYPES["nope"]


def test_releasing_the_runtimes_load_time_code_keeps_its_answers(demo_dir: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    from sensorcast.agent.forecast.manifest import read_bundle
    from sensorcast.agent.forecast.runtime import (
        _clean_code_ranges,
        load_runtime,
        release_load_code,
    )

    runtime = load_runtime("litert")  # releases once already
    model = read_bundle(demo_dir / "room.tflite").model

    def answer() -> np.ndarray:
        interp = runtime.interpreter(model)  # and once more after building it
        detail = interp.get_input_details()[0]
        values = np.linspace(-1, 1, int(np.prod(detail["shape"])), dtype=np.float32)
        interp.set_tensor(detail["index"], values.reshape(detail["shape"]))
        interp.invoke()
        out: np.ndarray = interp.get_tensor(interp.get_output_details()[0]["index"]).copy()
        return out

    first = answer()
    if sys.platform.startswith("linux"):
        assert release_load_code("ai_edge_litert") > 0
        import ai_edge_litert

        folder = str(Path(ai_edge_litert.__file__).resolve().parent) + "/"
        ranges = _clean_code_ranges(folder)
        assert ranges and all(start < end for start, end in ranges)
        with open("/proc/self/maps") as maps:
            code = {
                line.split()[0]
                for line in maps
                if line.split()[1] == "r-xp" and line.split()[-1].startswith(folder)
            }
        assert {f"{s:x}-{e:x}" for s, e in ranges} <= code  # only the package's own code
    np.testing.assert_array_equal(answer(), first)
    np.testing.assert_array_equal(answer(), first)


def test_a_library_written_moments_ago_still_counts_as_clean_code(tmp_path: Path) -> None:
    # A fresh install's files are dirty in the page cache until written back, and smaps
    # counts those pages as Private_Dirty; the release must not take that for modified code
    # (CI installs the runtime minutes before the tests: it found nothing to release).
    import _ctypes
    import ctypes

    from sensorcast.agent.forecast.runtime import _clean_code_ranges, _code_mappings

    copy = tmp_path / "fresh" / Path(_ctypes.__file__).name
    copy.parent.mkdir()
    copy.write_bytes(Path(_ctypes.__file__).read_bytes())
    ctypes.CDLL(str(copy))  # mapped as a library; its module init never runs
    with open("/proc/self/smaps") as smaps:
        text = smaps.read()
    after = text[text.index(str(copy)) :]
    dirty = int(after.split("Private_Dirty:")[1].split()[0]) + int(
        after.split("Shared_Dirty:")[1].split()[0]
    )
    assert dirty > 0  # what this test is about: the page cache still holds the write
    ranges = _clean_code_ranges(str(copy.parent) + "/")
    assert len(ranges) == 1 and ranges[0][0] < ranges[0][1]
    # the cheap check each release makes (maps) finds the same code mapping as smaps
    assert _code_mappings(str(copy.parent) + "/") == ranges
