"""The outbox: durable across reopen (and a killed process), ordered, bounded, degrading."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sensorcast.agent.publish.outbox import Outbox


def test_messages_survive_a_reopen_in_order_until_acked(tmp_path: Path) -> None:
    db = tmp_path / "state" / "outbox.db"
    box = Outbox(db)
    ids = [box.put("t/a", f"m{i}".encode(), qos=1) for i in range(5)]
    box.ack(ids[1])
    box.close()
    again = Outbox(db)
    assert again.depth == 4 and again.degraded is None
    assert [m.payload for m in again.pending()] == [b"m0", b"m2", b"m3", b"m4"]
    assert [m.id for m in again.pending(after=ids[2])] == ids[3:]


def test_a_killed_process_loses_nothing_it_handed_out_for_sending(tmp_path: Path) -> None:
    """Puts are grouped into one commit per loop turn, made before pending() hands
    anything out."""
    db = tmp_path / "outbox.db"
    code = (
        "import os, sys; from pathlib import Path\n"
        "from sensorcast.agent.publish.outbox import Outbox\n"
        f"box = Outbox(Path({str(db)!r}))\n"
        "for i in range(60): box.put('t', str(i).encode(), 1)\n"
        "assert len(box.pending(limit=1000)) == 60\n"
        "box.ack(1)\n"  # its delete rides along with the next commit
        "for i in range(60, 65): box.put('t', str(i).encode(), 1)\n"
        "box.sync(3600)\n"  # end of a loop turn (disconnected: nothing handed out)
        "box.ack(2)\n"  # a delete not yet committed: sent again after the crash, not lost
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -9
    box = Outbox(db)
    assert [m.payload for m in box.pending(limit=1000)] == [str(i).encode() for i in range(1, 65)]


def test_pending_from_memory_and_from_disk_agree(tmp_path: Path) -> None:
    """The newest messages come from memory, older ones (past the cache) from disk."""
    box = Outbox(tmp_path / "o.db", max_messages=100_000, max_bytes=1 << 30)
    ids = [box.put("t", str(i).encode(), 1) for i in range(700)]
    for i in ids[::3]:
        box.ack(i)
    live = [i for k, i in enumerate(ids) if k % 3]
    for after in (0, ids[100], ids[500], ids[650], ids[-1]):
        got = [m.id for m in box.pending(after=after, limit=1000)]
        assert got == [i for i in live if i > after]
        assert [m.id for m in box.pending(after=after, limit=7)] == got[:7]
    box.sync(0.0)  # acks committed without a new message
    again = Outbox(tmp_path / "o.db")
    assert [m.id for m in again.pending(limit=1000)] == live and again.depth == len(live)


def test_bounded_by_count_and_bytes_dropping_the_oldest(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_messages=3, max_bytes=10_000)
    for i in range(5):
        box.put("t", bytes([i]) * 10, 1)
    assert box.depth == 3 and box.dropped == 2
    assert [m.payload[0] for m in box.pending()] == [2, 3, 4]
    small = Outbox(tmp_path / "p.db", max_messages=100, max_bytes=25)
    for i in range(5):
        small.put("t", bytes([i]) * 10, 1)
    assert small.size_bytes <= 25 and small.dropped == 3


def test_read_only_state_directory_degrades_to_memory(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores directory permissions; a path under a file cannot be created by anyone
        blocked = tmp_path / "a-file"
        blocked.write_text("x")
        path = blocked / "outbox.db"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        path = ro / "outbox.db"
    box = Outbox(path, max_messages=2)
    assert box.degraded is not None
    for i in range(3):
        box.put("t", str(i).encode(), 1)
    assert [m.payload for m in box.pending()] == [b"1", b"2"] and box.dropped == 1
    box.ack(box.pending()[0].id)
    assert box.depth == 1


def test_a_disk_that_fills_up_degrades_to_memory_losing_nothing(tiny_disk: Path) -> None:
    """A real full filesystem: what was queued on disk and what comes after stays in order."""
    from tests.support.host import fill_disk

    box = Outbox(tiny_disk / "outbox.db", max_messages=100_000, max_bytes=1 << 30)
    ids = [box.put("t", f"{i}".encode() * 100, qos=1) for i in range(20)]
    box.ack(ids[0])
    assert box.degraded is None
    fill_disk(tiny_disk)
    for i in range(20, 400):  # the WAL needs room sooner or later
        ids.append(box.put("t", f"{i}".encode() * 100, qos=1))
    assert box.degraded is not None and "full" in box.degraded
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    waiting = box.pending(limit=1000)
    assert [m.id for m in waiting] == ids[1:]  # nothing stranded on disk, nothing lost
    assert [m.payload for m in waiting] == [f"{i}".encode() * 100 for i in range(1, 400)]
    assert box.depth == 399
    for m in waiting:
        box.ack(m.id)
    assert box.depth == 0 and box.size_bytes == 0
    box.close()


def test_memory_ids_continue_after_acked_disk_ids(tmp_path: Path) -> None:
    """The sender asks for ids above the last it sent: memory ids must not restart at 1."""
    box = Outbox(tmp_path / "outbox.db")
    last = 0
    for _ in range(5):
        last = box.put("t", b"x", qos=1)
        box.ack(last)
    box._degrade("test: simulated write failure")
    assert box.put("t", b"y", qos=1) > last
    assert [m.payload for m in box.pending(after=last)] == [b"y"]


def test_invalid_synchronous_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Outbox(tmp_path / "x.db", synchronous="sometimes")


def test_drops_are_logged_with_their_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full outbox drops the oldest: a WARNING says how many (rate-limited, the rest
    counted into the next line, which close() writes at the latest)."""
    box = Outbox(tmp_path / "o.db", max_messages=5)
    with caplog.at_level(logging.WARNING, logger="sensorcast.agent.publish.outbox"):
        for i in range(20):
            box.put("t", str(i).encode(), 1)
        box.sync(3600)  # end of the loop turn
        for _ in range(4):
            box.put("t", b"more", 1)
        box.sync(3600)  # within the rate limit: no second line yet
        lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(lines) == 1 and "dropped the 15 oldest" in lines[0], lines
        assert "max_messages 5" in lines[0] and "(15 since start)" in lines[0]
        box.close()
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(lines) == 2 and "dropped the 4 oldest" in lines[1] and "(19 since start)" in lines[1]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "dropped" in r.message)
    assert box.dropped == 19


def test_durability_comes_back_when_the_disk_has_room_again(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real full filesystem, then room again: the outbox goes back to disk with everything
    memory held (in order, same ids), says so, and new messages are on disk too."""
    from tests.support.host import fill_disk

    path = tiny_disk / "outbox.db"
    box = Outbox(path, max_messages=100_000, max_bytes=1 << 30)
    ids = [box.put("t", f"{i}".encode() * 100, qos=1) for i in range(20)]
    box.ack(ids[0])
    fill_disk(tiny_disk)
    for i in range(20, 400):  # the WAL needs room sooner or later
        ids.append(box.put("t", f"{i}".encode() * 100, qos=1))
    assert box.degraded is not None
    for msg_id in ids[1:5]:  # acked while in memory only: must not come back
        box.ack(msg_id)
    assert not box.restore()  # still full: stays in memory, nothing lost
    assert box.degraded is not None and box.depth == 395
    (tiny_disk / "filler").unlink()
    with caplog.at_level(logging.WARNING, logger="sensorcast.agent.publish.outbox"):
        assert box.restore()
    assert box.degraded is None and box.restored == 1
    assert any("durability restored (395 queued" in r.getMessage() for r in caplog.records)
    later = box.put("t", b"after", qos=1)
    assert later > ids[-1]
    waiting = box.pending(limit=1000)
    assert [m.id for m in waiting] == [*ids[5:], later]
    box.ack(ids[5])
    box.sync(0.0)
    # Durable: a process that dies now loses none of it (a reopen reads it all from disk).
    again = Outbox(path, max_messages=100_000, max_bytes=1 << 30)
    assert [m.id for m in again.pending(limit=1000)] == [*ids[6:], later]
    assert [m.payload for m in again.pending(limit=1000)][:2] == [b"6" * 100, b"7" * 100]
    assert again.put("t", b"next", qos=1) > later
    box.close()
    again.close()


def test_the_wal_stays_small_on_a_small_volume(tiny_disk: Path) -> None:
    """256 KiB free (the issue's state volume): a steady stream of forecasts, each acked,
    thousands of commits; SQLite's default WAL (4 MiB before a checkpoint) would fill it."""
    (tiny_disk / "filler").write_bytes(b"\0" * (256 * 1024))
    box = Outbox(tiny_disk / "outbox.db")
    wal = tiny_disk / "outbox.db-wal"
    largest = 0
    for _ in range(1500):
        msg_id = box.put("sensorcast/pi/room/forecast", b"x" * 300, qos=1)
        box.sync(1.0)  # the loop turn that made the forecast
        box.ack(msg_id)
        box.sync(0.0)  # the delete, committed
        largest = max(largest, wal.stat().st_size)
    assert box.degraded is None, box.degraded
    assert largest <= 192 * 1024, largest
    box.close()


def _old_format(path: Path, payloads: list[bytes]) -> None:
    """An outbox file as versions before the ``created`` column wrote it."""
    import sqlite3

    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
        "payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL)"
    )
    db.executemany(
        "INSERT INTO outbox (topic, payload, qos, retain) VALUES ('t', ?, 1, 1)",
        [(p,) for p in payloads],
    )
    db.execute("DELETE FROM outbox WHERE id = 2")  # acked before the upgrade
    db.commit()
    db.close()


def test_an_outbox_file_of_an_older_version_is_migrated_keeping_its_messages(
    tmp_path: Path,
) -> None:
    """The ``created`` column is added (their age unknown: None), the ids go on, and new
    messages record when they were put; opening it again changes nothing."""
    import sqlite3
    import time

    path = tmp_path / "outbox.db"
    _old_format(path, [b"a", b"b", b"c"])
    box = Outbox(path)
    assert box.degraded is None and box.depth == 2
    old = box.pending()
    assert [(m.id, m.payload, m.retain, m.created) for m in old] == [
        (1, b"a", True, None),
        (3, b"c", True, None),
    ]
    before = time.time()
    new = box.put("t", b"d", qos=1)
    assert new == 4  # after every id the old version handed out
    box.close()
    again = Outbox(path)
    got = again.pending()
    assert [m.payload for m in got] == [b"a", b"c", b"d"] and got[-1].id == new
    created = got[-1].created
    assert created is not None and before <= created <= time.time()
    again.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    db.close()


def test_a_newer_versions_outbox_file_is_read_as_it_is(tmp_path: Path) -> None:
    """A file a later version wrote (a higher ``user_version``, a column this one does not
    know) is used, not downgraded: after a rollback nothing queued is lost."""
    import sqlite3

    path = tmp_path / "outbox.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
        "payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, created REAL, "
        "kind TEXT)"
    )
    db.execute("INSERT INTO outbox (topic, payload, qos, retain, created, kind) "
               "VALUES ('t', X'78', 1, 0, 12.5, 'forecast')")  # fmt: skip
    db.execute("PRAGMA user_version = 7")
    db.commit()
    db.close()
    box = Outbox(path)
    assert [(m.payload, m.created) for m in box.pending()] == [(b"x", 12.5)]
    box.put("t", b"y", qos=1)
    box.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 7
    db.close()


def test_messages_in_memory_know_when_they_were_put(tmp_path: Path) -> None:
    """Degraded (no state directory): the time is kept all the same."""
    box = Outbox(None)
    box.put("t", b"x", qos=1)
    assert box.degraded is not None and box.pending()[0].created is not None


def test_statements_wait_for_the_commit_yet_reads_see_them(tmp_path: Path) -> None:
    """Puts and deletes run together at the commit (executemany); a read of the file in
    between sees them, and a message acked twice (dropped, then its PUBACK) counts once."""
    db = tmp_path / "o.db"
    box = Outbox(db, max_messages=3)
    ids = [box.put("t", str(i).encode(), 1) for i in range(5)]  # the two oldest dropped
    assert box.dropped == 2 and box.depth == 3
    box.ack(ids[0])  # dropped already: nothing left to forget
    box.ack(ids[2])  # put and acked before any commit
    assert box.depth == 2
    box.commit()
    box.close()
    again = Outbox(db)
    assert [m.id for m in again.pending()] == ids[3:]
    assert again.put("t", b"next", 1) == ids[-1] + 1  # ids go on where they stopped
    big = Outbox(tmp_path / "big.db", max_messages=100_000, max_bytes=1 << 30)
    many = [big.put("t", b"x", 1) for i in range(600)]  # past the in-memory cache
    big.commit()
    big.ack(many[0])  # a delete not yet run: the read from disk must not return it
    assert [m.id for m in big.pending(limit=2)] == many[1:3]
    big.ack(many[0])  # a second ack of it finds nothing
    assert big.depth == 599
