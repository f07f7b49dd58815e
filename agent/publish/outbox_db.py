"""The outbox's SQLite file: opened in WAL mode with the WAL bounded by the room its volume
has, and rewritten whole when durability comes back after a failure.

The WAL may use at most a quarter of the free space (:data:`WAL_SHARE`), between
:data:`WAL_MIN_PAGES` and SQLite's default of 1000 pages (4 MiB), looked at again every
:data:`SPACE_CHECK_COMMITS` commits; a checkpointed WAL is cut back to that size. SQLite's
fixed 4 MiB alone filled a 256 KiB state volume, while checkpointing that often everywhere
would cost two fsyncs every few commits on a big card.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

__all__ = ["SPACE_CHECK_COMMITS", "bound_wal", "connect", "queued", "replace_all"]

WAL_SHARE = 4  #: The WAL may use at most 1/WAL_SHARE of its volume's free space...
WAL_MIN_PAGES = 16  #: ... but is allowed this many pages (4 KiB each) in any case...
WAL_MAX_PAGES = 1000  #: ... and needs no more than SQLite's default before a checkpoint.
SPACE_CHECK_COMMITS = 256  #: Free space is looked at again after this many commits.


def connect(path: Path, synchronous: str) -> tuple[sqlite3.Connection, int]:
    """Open (or create) the outbox database; returns it and its WAL bound (pages)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        pages = bound_wal(db, path, 0)
        # a WAL left big by an older version or a crash: back to nothing (if this cannot
        # be done now, the first write says why)
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, "
            "retain INTEGER NOT NULL)"
        )
    except BaseException:
        db.close()
        raise
    return db, pages


def queued(db: sqlite3.Connection) -> tuple[int, int, int]:
    """What the file holds: messages queued, their payload bytes, and the next id to hand
    out (AUTOINCREMENT's sequence: acked ids are never handed out again)."""
    count, size = db.execute(
        "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox"
    ).fetchone()
    seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return int(count), int(size), (int(seq[0]) + 1 if seq else 1)


def bound_wal(db: sqlite3.Connection, path: Path, pages_now: int) -> int:
    """Fit the WAL's checkpoint threshold and size limit to the free space on ``path``'s
    volume now; returns the bound in pages (``pages_now`` if it cannot be looked at)."""
    try:
        st = os.statvfs(path.parent)
        page = int(db.execute("PRAGMA page_size").fetchone()[0])
        pages = st.f_bavail * st.f_frsize // WAL_SHARE // page
        pages = max(WAL_MIN_PAGES, min(WAL_MAX_PAGES, pages))
        if pages != pages_now:
            db.execute(f"PRAGMA wal_autocheckpoint={pages}")
            db.execute(f"PRAGMA journal_size_limit={pages * page}")
    except (OSError, sqlite3.Error):
        return pages_now  # keep the last bound; a write that fails says why
    return pages


def replace_all(
    db: sqlite3.Connection, rows: Iterable[tuple[int, str, bytes, int, int]], last_id: int
) -> None:
    """Make ``rows`` (id, topic, payload, qos, retain) the whole outbox, in one transaction;
    new ids go on above ``last_id``. Raises :class:`sqlite3.Error` (nothing changed) if the
    file cannot take it."""
    db.execute("DELETE FROM outbox")
    db.executemany(
        "INSERT INTO outbox (id, topic, payload, qos, retain) VALUES (?, ?, ?, ?, ?)", rows
    )
    cur = db.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'outbox'", (last_id,)
    )
    if cur.rowcount == 0:
        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (last_id,))
    db.commit()
