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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "SPACE_CHECK_COMMITS",
    "Message",
    "bound_wal",
    "connect",
    "migrate",
    "queued",
    "replace_all",
]

WAL_SHARE = 4  #: The WAL may use at most 1/WAL_SHARE of its volume's free space...
WAL_MIN_PAGES = 16  #: ... but is allowed this many pages (4 KiB each) in any case...
WAL_MAX_PAGES = 1000  #: ... and needs no more than SQLite's default before a checkpoint.
SPACE_CHECK_COMMITS = 256  #: Free space is looked at again after this many commits.
SCHEMA_VERSION = 1  #: The outbox table's version (``PRAGMA user_version``; 0: no ``created``).
#: A message's columns, in the order :class:`~.outbox.Message` takes them.
COLUMNS = "id, topic, payload, qos, retain, created"


@dataclass(frozen=True)
class Message:
    """One queued message; ``id`` increases in the order messages were put."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    #: When it was put (Unix s); None if an older version queued it (age unknown).
    created: Optional[float] = None

    def row(self) -> tuple[int, str, bytes, int, int, Optional[float]]:
        """Its columns (:data:`COLUMNS`)."""
        return (self.id, self.topic, self.payload, self.qos, int(self.retain), self.created)

    @classmethod
    def of_row(cls, r: tuple[Any, ...]) -> Message:
        """The message a row (:data:`COLUMNS`) holds."""
        return cls(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5])


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
            "retain INTEGER NOT NULL, created REAL)"
        )
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db, pages


def migrate(db: sqlite3.Connection) -> None:
    """Bring an outbox file of an older version up to :data:`SCHEMA_VERSION` (SQLite's
    ``user_version``), keeping what it holds:

    1. ``created`` (Unix s the message was put; NULL for the messages an older version
       queued: their age is unknown).
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version >= SCHEMA_VERSION:
        return  # a newer version's file: it only added columns this one does not read
    columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
    if "created" not in columns:
        db.execute("ALTER TABLE outbox ADD COLUMN created REAL")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.commit()


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
    db: sqlite3.Connection,
    rows: Iterable[tuple[int, str, bytes, int, int, Optional[float]]],
    last_id: int,
) -> None:
    """Make ``rows`` (:data:`COLUMNS`) the whole outbox, in one transaction; new ids go on
    above ``last_id``. Raises :class:`sqlite3.Error` (nothing changed) if the file cannot
    take it."""
    db.execute("DELETE FROM outbox")
    db.executemany(f"INSERT INTO outbox ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", rows)
    cur = db.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'outbox'", (last_id,)
    )
    if cur.rowcount == 0:
        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (last_id,))
    db.commit()
