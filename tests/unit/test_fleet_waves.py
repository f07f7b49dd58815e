"""Rollout waves: cohorts by a stable hash of the device id, cumulative percentages, at least
one device per wave; durations and shares as the flags take them."""

from __future__ import annotations

import hashlib
import random

import pytest
from sensorcast.agent.errors import ConfigError
from sensorcast.agent.fleet.waves import (
    cohort_order,
    parse_duration,
    parse_share,
    parse_waves,
    split_waves,
)


def test_the_cohort_order_is_the_ids_hash_order_whatever_order_they_come_in() -> None:
    ids = [f"dev-{i:03d}" for i in range(50)]
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)
    order = cohort_order(ids)
    assert order == cohort_order(shuffled) == cohort_order(reversed(ids))
    assert order == sorted(ids, key=lambda d: hashlib.sha256(d.encode()).hexdigest())
    assert order != ids  # not the alphabet: dev-000 is not always the canary


def test_a_device_keeps_its_place_when_others_join() -> None:
    """Adding devices never moves the others relative to each other."""
    few = cohort_order(f"d{i}" for i in range(20))
    many = cohort_order(f"d{i}" for i in range(40))
    assert [d for d in many if d in set(few)] == few


def test_waves_are_cumulative_and_cover_every_device_once() -> None:
    ids = [f"dev-{i}" for i in range(1000)]
    waves = split_waves(ids, parse_waves("1,10,50,100"))
    assert [len(w) for w in waves] == [10, 90, 400, 500]
    flat = [d for w in waves for d in w]
    assert flat == cohort_order(ids) and len(set(flat)) == 1000


def test_every_wave_has_at_least_one_device() -> None:
    assert [len(w) for w in split_waves(["a", "b", "c"], (34, 67, 100))] == [1, 1, 1]
    assert [len(w) for w in split_waves(["a", "b", "c"], (1, 10, 50, 100))] == [1, 1, 1]
    assert [len(w) for w in split_waves(["a", "b"], (1, 10, 50, 100))] == [1, 1]
    assert [len(w) for w in split_waves(["a"], (1, 100))] == [1]
    assert [len(w) for w in split_waves([f"d{i}" for i in range(10)], (25, 100))] == [3, 7]


def test_the_same_devices_give_the_same_waves_every_time() -> None:
    ids = [f"probe-{i}" for i in range(200)]
    assert split_waves(ids, (5, 50, 100)) == split_waves(list(reversed(ids)), (5, 50, 100))


@pytest.mark.parametrize("text", ["", "a,b", "10,5,100", "0,100", "10,50", "50,150", "10,10,100"])
def test_bad_waves_get_one_line_with_an_example(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--waves .*1,10,50,100") as caught:
        parse_waves(text)
    assert "\n" not in str(caught.value)


def test_durations() -> None:
    assert parse_duration("30s", "--soak") == 30
    assert parse_duration("10m", "--soak") == 600
    assert parse_duration("1h", "--soak") == 3600
    assert parse_duration("1.5", "--soak") == 1.5
    assert parse_duration("500ms", "--soak") == 0.5
    assert parse_duration("2d", "--soak") == 172800
    for bad in ("", "ten minutes", "-1s", "5y", "1h30m"):
        with pytest.raises(ConfigError, match=r"--soak .*30s, 10m, 1h"):
            parse_duration(bad, "--soak")


def test_shares() -> None:
    assert parse_share("0.1", "--max-failed") == 0.1
    assert parse_share("25%", "--max-failed") == 0.25
    assert parse_share("0", "--max-failed") == 0.0
    for bad in ("1.5", "-0.1", "x", "nan", "200%"):
        with pytest.raises(ConfigError, match="--max-failed"):
            parse_share(bad, "--max-failed")
