"""A bounded, durable outbox: every message is on disk before it is sent.

SQLite in WAL mode under the agent's state directory. A message leaves the
outbox only when the broker acknowledged it. When full (``max_messages`` or
``max_bytes``), the oldest messages are dropped and counted, so an SD card
never fills up; drops are logged (a WARNING with the count, at most every
:data:`DROP_LOG_S`). If the database cannot be opened or written (read-only or
full disk), the outbox keeps working in memory, bounded the same way, and says
that durability is degraded; it tries the database again after :data:`RETRY_MIN_S`
(doubling up to :data:`RETRY_MAX_S`) and, once it can be written, moves what memory
holds back to disk (in order, same ids) and says that durability is restored.

The write-ahead log is bounded by the room its volume has
(:mod:`sensorcast.agent.publish.outbox_db`).

``synchronous`` trades durability for SD-card writes (SQLite's PRAGMA):

* ``normal`` (default): in WAL mode, a committed message survives a crash of
  the agent; a power cut may lose the last few commits.
* ``full``: also survives a power cut; one fsync per message.
* ``off``: no fsync; a power cut can lose or corrupt recent messages.

Writes are grouped: a message is staged by :meth:`Outbox.put` and committed, with
whatever else the loop turn staged, at the end of the turn (:meth:`Outbox.sync`) and in
any case before :meth:`Outbox.pending` hands it out for sending, so no message reaches
the broker before it is on disk. Acknowledged messages are deleted in the same
transactions (or at most ``sync``'s ``max_age_s`` later): a crash in between only means
a message the broker already has is sent again, which QoS 1 allows and the message id
lets consumers drop. Recently put messages are also kept in memory, so sending them
needs no read from disk.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sqlite3
import time
from pathlib import Path
from typing import Optional

from sensorcast.agent.publish import outbox_db
from sensorcast.agent.publish.outbox_db import Message

__all__ = ["Message", "Outbox"]

logger = logging.getLogger(__name__)

SYNCHRONOUS = ("off", "normal", "full")
CACHE_MESSAGES = 256  #: Newest messages also kept in memory, so sending them reads no disk.
MAX_STAGED = 100  #: Messages staged before :meth:`Outbox.put` commits by itself.
DROP_LOG_S = 10.0  #: At most one "dropped" warning this often, seconds.
RETRY_MIN_S = 30.0  #: First retry of the database after it failed, seconds; then doubling...
RETRY_MAX_S = 300.0  #: ... up to this, seconds.
INSERT = f"INSERT INTO outbox ({outbox_db.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"


class Outbox:
    """Owned by the agent's main loop (one thread); bounded in count and bytes."""

    def __init__(
        self,
        path: Optional[Path],
        max_messages: int = 10_000,
        max_bytes: int = 8 * 1024 * 1024,
        synchronous: str = "normal",
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.dropped = 0  #: Messages dropped because the outbox was full.
        self.high_water = 0  #: Most messages waiting at once since start.
        self.degraded: Optional[str] = None  #: Why messages are only in memory, if they are.
        self.restored = 0  #: Times durability came back after being degraded.
        self._path = path
        self._synchronous = synchronous
        self._db: Optional[sqlite3.Connection] = None
        self._retry_at: Optional[float] = None  # monotonic time of the next try of the database
        self._retry_s = RETRY_MIN_S
        self._restored_at: Optional[float] = None  # monotonic time durability last came back
        self._drops_unlogged = 0  # dropped since the last warning
        self._wal_pages = 0  # the WAL's checkpoint threshold now, pages
        self._commits = 0  # since free space was last looked at
        self._next_drop_log = 0.0
        self._memory: collections.OrderedDict[int, Message] = collections.OrderedDict()
        self._next_id = 1
        self._count = 0
        self._bytes = 0
        # Disk mode: messages put by this process and not acked, newest CACHE_MESSAGES; every
        # live message with an id from _cache_from up is in it.
        self._cache: collections.OrderedDict[int, Message] = collections.OrderedDict()
        self._cache_from = 1
        self._staged: list[Message] = []  # put since the last commit
        self._deleted: set[int] = set()  # acked since the last commit
        # The statements for those, run together (executemany) at the commit, or before
        # anything is read back from the file.
        self._rows: list[tuple[int, str, bytes, int, int, Optional[float]]] = []
        self._gone: list[tuple[int]] = []
        self._dirty_since: Optional[float] = None  # monotonic time of the oldest change
        if path is None:
            self.degraded = "no state directory configured"
        else:
            try:
                self._open(path)
            except (sqlite3.Error, OSError) as exc:
                self._degrade(f"cannot open {path}: {exc}")

    @property
    def depth(self) -> int:
        """Messages waiting for an acknowledgement."""
        return self._count

    @property
    def size_bytes(self) -> int:
        """Payload bytes waiting."""
        return self._bytes

    def put(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int:
        """Store a message; returns its id. Drops the oldest when over a bound."""
        created = time.time()  # wall clock: the age must survive a restart
        if self._db is not None:
            msg_id = self._next_id  # AUTOINCREMENT's next id: nothing else writes the table
            self._next_id = msg_id + 1
            msg = Message(msg_id, topic, payload, qos, retain, created)
            self._rows.append((msg_id, topic, payload, qos, int(retain), created))
            self._staged.append(msg)
            self._cache[msg_id] = msg
            if len(self._cache) > CACHE_MESSAGES:
                self._cache_from = self._cache.popitem(last=False)[0] + 1
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
            self._count += 1
            self._bytes += len(payload)
            self._enforce_bounds()
            self.high_water = max(self.high_water, self._count)
            if len(self._staged) >= MAX_STAGED:
                self.commit()
            return msg_id
        msg_id = self._next_id
        self._next_id += 1
        self._memory[msg_id] = Message(msg_id, topic, payload, qos, retain, created)
        self._count += 1
        self._bytes += len(payload)
        self._enforce_bounds()
        self.high_water = max(self.high_water, self._count)
        return msg_id

    def commit(self) -> None:
        """Make what was put (and acked) since the last commit durable."""
        db = self._db
        if db is not None and (self._staged or self._deleted or db.in_transaction):
            try:
                self._write(db)
                db.commit()
            except sqlite3.Error as exc:
                self._degrade(f"cannot write: {exc}")
                return
            self._commits += 1
            if self._commits >= outbox_db.SPACE_CHECK_COMMITS and self._path is not None:
                self._commits = 0
                self._wal_pages = outbox_db.bound_wal(db, self._path, self._wal_pages)
        self._staged.clear()
        self._deleted.clear()
        self._dirty_since = None

    def _write(self, db: sqlite3.Connection) -> None:
        """Run the inserts and deletes staged since the last write, in the open transaction
        (one statement each for all of them). Raises :class:`sqlite3.Error`."""
        if self._rows:
            db.executemany(INSERT, self._rows)
            self._rows.clear()
        if self._gone:
            db.executemany("DELETE FROM outbox WHERE id = ?", self._gone)
            self._gone.clear()

    def sync(self, max_age_s: float) -> None:
        """End of a loop turn: commit what was put, connected or not; deletes alone wait
        until they are ``max_age_s`` old (or ride along with the next message). Also logs
        drops (rate-limited) and, while degraded, tries the database again when due."""
        if self._drops_unlogged:
            self._log_drops(force=False)
        if self._db is None:
            if self._retry_at is not None and time.monotonic() >= self._retry_at:
                self.restore()
            return
        if self._staged or (
            self._dirty_since is not None and time.monotonic() - self._dirty_since >= max_age_s
        ):
            self.commit()

    def pending(self, after: int = 0, limit: int = 100) -> list[Message]:
        """Up to ``limit`` messages with an id above ``after``, oldest first, for sending:
        whatever was staged is committed first, so each is on disk before it is sent."""
        if self._staged:
            self.commit()
        return self._pending(after, limit)

    def _pending(self, after: int, limit: int) -> list[Message]:
        out: list[Message] = []
        if self._db is not None and after + 1 >= self._cache_from:
            # the newest messages: from memory, no disk read
            for msg_id, msg in reversed(self._cache.items()):
                if msg_id <= after:
                    break
                out.append(msg)
            out.reverse()
            del out[limit:]
        elif self._db is not None:
            try:
                self._write(self._db)
                rows = self._db.execute(
                    f"SELECT {outbox_db.COLUMNS} FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                    (after, limit),
                ).fetchall()
                out = [Message.of_row(r) for r in rows]
            except sqlite3.Error as exc:
                self._degrade(f"cannot read: {exc}")
        if len(out) < limit:
            out += [m for i, m in self._memory.items() if i > after][: limit - len(out)]
        return out

    def ack(self, msg_id: int) -> None:
        """The broker has the message: forget it."""
        mem = self._memory.pop(msg_id, None)
        if mem is not None:
            self._count -= 1
            self._bytes -= len(mem.payload)
            return
        if self._db is None:
            return
        cached = self._cache.pop(msg_id, None)
        try:
            size: Optional[int] = len(cached.payload) if cached is not None else None
            if cached is None:  # from before a restart, or acked twice (dropped, then acked)
                self._write(self._db)  # a delete still to run must not find it here
                # no DELETE ... RETURNING: Raspberry Pi OS Bullseye ships SQLite 3.34
                row = self._db.execute(
                    "SELECT length(payload) FROM outbox WHERE id = ?", (msg_id,)
                ).fetchone()
                size = None if row is None else int(row[0])
        except sqlite3.Error as exc:
            self._degrade(f"cannot delete: {exc}")
            self.ack(msg_id)  # now in memory
            return
        if size is not None:
            # Deleted and committed with the next message (or by sync): a crash before then
            # re-sends it.
            self._gone.append((msg_id,))
            self._deleted.add(msg_id)
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
            self._count -= 1
            self._bytes -= size

    def restore(self) -> bool:
        """Degraded: try the database again now. If it can be written, what memory holds
        moves to disk in one transaction (in order, same ids) and durability is back.
        Returns True if the outbox is on disk."""
        if self._db is not None:
            return True
        path = self._path
        if path is None:
            return False
        moving = list(self._memory.values())
        db: Optional[sqlite3.Connection] = None
        try:
            db, self._wal_pages = outbox_db.connect(path, self._synchronous)
            # What the database still holds was carried into memory when it failed (and some
            # of it acked since): memory is the truth. New ids go on above every id handed
            # out in memory, acked ones included: the sender asks for ids above the last sent.
            outbox_db.replace_all(db, [m.row() for m in moving], self._next_id - 1)
        except (sqlite3.Error, OSError) as exc:
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()  # rolls back
            self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
            self._retry_at = time.monotonic() + self._retry_s
            logger.debug("outbox: %s still cannot be written (%s)", path, exc)
            return False
        self._db = db
        self._memory = collections.OrderedDict()
        self._cache = collections.OrderedDict((m.id, m) for m in moving[-CACHE_MESSAGES:])
        # every live message from _cache_from up is cached; before it, on disk only
        self._cache_from = moving[-CACHE_MESSAGES].id if len(moving) > CACHE_MESSAGES else 1
        self._retry_at = None
        self._restored_at = time.monotonic()
        self.restored += 1
        logger.warning(
            "outbox: %s can be written again: durability restored (%d queued messages "
            "moved from memory to disk)",
            path,
            len(moving),
        )
        self.degraded = None
        return True

    def close(self) -> None:
        """Checkpoint and close the database."""
        if self._drops_unlogged:
            self._log_drops(force=True)
        self.commit()
        if self._db is not None:
            # closing anyway if this fails: WAL content is replayed on the next open
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    def _open(self, path: Path) -> None:
        db, self._wal_pages = outbox_db.connect(path, self._synchronous)
        self._count, self._bytes, self._next_id = outbox_db.queued(db)
        self._db = db
        self._cache_from = self._next_id  # what came before is on disk only
        if self._count:
            logger.info("outbox %s: %d messages from before the restart to send", path, self._count)

    def _degrade(self, why: str) -> None:
        if self.degraded is None:
            now = time.monotonic()
            # Failing again soon after coming back (a disk all but full) backs off further:
            # two log lines every few minutes at most, not every 30 s.
            if self._restored_at is not None and now - self._restored_at < RETRY_MAX_S:
                self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
            else:
                self._retry_s = RETRY_MIN_S
            self._retry_at = now + self._retry_s if self._path is not None else None
            retry = (
                f"; trying the state directory again in {self._retry_s:g} s"
                if self._path is not None
                else ""
            )
            logger.error(
                "outbox: %s; durability is degraded: messages are kept in memory only%s",
                why,
                retry,
            )
        self.degraded = why
        if self._db is None:
            return
        # Carry on in memory with what the database still holds (in order, same ids), so
        # nothing already queued is stranded on disk; copies left there are sent again after
        # a restart, and the message ids let consumers drop them.
        # A failed commit may have rolled the staged messages back: they come from memory.
        try:
            rows = self._db.execute(
                f"SELECT {outbox_db.COLUMNS} FROM outbox ORDER BY id"
            ).fetchall()
        except sqlite3.Error as exc:
            rows = []
            logger.error("outbox: cannot read the queued messages back (%s): left on disk", exc)
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._db = None
        found = {r[0]: Message.of_row(r) for r in rows}
        found.update((m.id, m) for m in self._staged if m.id not in self._deleted)
        for msg_id in self._deleted:
            found.pop(msg_id, None)
        carried = collections.OrderedDict(sorted(found.items()))
        carried.update(self._memory)
        self._memory = carried
        self._cache.clear()
        self._staged.clear()
        self._deleted.clear()
        self._rows.clear()
        self._gone.clear()
        self._dirty_since = None
        if self._memory:
            self._next_id = max(self._next_id, next(reversed(self._memory)) + 1)
        self._count = len(self._memory)
        self._bytes = sum(len(m.payload) for m in self._memory.values())

    def _enforce_bounds(self) -> None:
        while self._count > self.max_messages or (self._bytes > self.max_bytes and self._count > 1):
            oldest = self._pending(0, 1)
            if not oldest:
                return
            self.ack(oldest[0].id)
            self.dropped += 1
            self._drops_unlogged += 1

    def _log_drops(self, force: bool) -> None:
        """The rate-limited WARNING for drops since the last one (``force``: now)."""
        now = time.monotonic()
        if not force and now < self._next_drop_log:
            return
        self._next_drop_log = now + DROP_LOG_S
        logger.warning(
            "outbox full (max_messages %d, max_bytes %d): dropped the %d oldest messages not "
            "yet acknowledged (%d since start)",
            self.max_messages,
            self.max_bytes,
            self._drops_unlogged,
            self.dropped,
        )
        self._drops_unlogged = 0
