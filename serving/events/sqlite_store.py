"""The embedded event store: one SQLite file in WAL mode.

Every model instance and process (the ``events`` writer, each ``user_tower`` instance, the
client tools) opens the same file; WAL lets readers run while one writer commits, and
``busy_timeout`` makes a second writer wait (up to ``busy_timeout_ms``) instead of failing.
``synchronous=FULL``: a commit is fsynced before :meth:`SqliteEventStore.append` returns, so an
acknowledged event survives a killed process and a power loss.

Schema: ``events(seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id, item_id, ts, event_type)`` with
an index on ``(user_id, ts, seq)``: a user's newest events are one index range scan. Each write
trims the users it touched to their newest ``max_per_user`` events in the same transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import numpy as np

from serving.events.store import DEFAULT_MAX_PER_USER, EventBatch, EventStoreError
from serving.sqlite_wal import open_wal

log = logging.getLogger(__name__)

__all__ = ["SqliteEventStore"]

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " user_id INTEGER NOT NULL, item_id INTEGER NOT NULL,"
    " ts INTEGER NOT NULL, event_type INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, ts, seq)",
)
NEWEST = "SELECT item_id, ts FROM events WHERE user_id = ? ORDER BY ts DESC, seq DESC LIMIT ?"
#: Events after a cursor, in arrival order: a primary-key range scan.
SINCE = "SELECT seq, item_id, ts FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
TRIM = (
    "DELETE FROM events WHERE user_id = ? AND seq NOT IN "
    "(SELECT seq FROM events WHERE user_id = ? ORDER BY ts DESC, seq DESC LIMIT ?)"
)


class SqliteEventStore:
    """Events in the SQLite file ``path`` (created with its folder when missing).

    ``max_per_user`` events are kept per user; ``busy_timeout_ms`` is how long a write waits
    for another process's write to finish. One connection per store, guarded by a lock: a
    store may be shared by threads."""

    def __init__(
        self,
        path: Path,
        *,
        max_per_user: int = DEFAULT_MAX_PER_USER,
        busy_timeout_ms: int = 5000,
    ) -> None:
        if max_per_user < 1:
            raise ValueError(f"max_per_user must be >= 1, got {max_per_user}")
        self.path = Path(path)
        self.max_per_user = max_per_user
        self._lock = threading.Lock()
        try:
            self._db = open_wal(self.path, SCHEMA, busy_timeout_ms=busy_timeout_ms)
        except (sqlite3.Error, OSError) as exc:
            raise EventStoreError(f"cannot open the event store {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SqliteEventStore({str(self.path)!r}, max_per_user={self.max_per_user})"

    def append(self, batch: EventBatch) -> int:
        """Store all events of ``batch`` in one transaction (all or none), then trim each
        touched user to ``max_per_user``; fsynced when it returns."""
        if len(batch) == 0:
            return 0
        rows = list(
            zip(
                batch.user_ids.tolist(),
                batch.item_ids.tolist(),
                batch.ts.tolist(),
                batch.types.tolist(),
            )
        )
        users = sorted(set(batch.user_ids.tolist()))
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT INTO events (user_id, item_id, ts, event_type) VALUES (?, ?, ?, ?)",
                        rows,
                    )
                    self._db.executemany(TRIM, [(u, u, self.max_per_user) for u in users])
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise EventStoreError(f"writing {len(batch)} events to {self.path}: {exc}") from exc
        return len(batch)

    def recent(self, user_id: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``n`` events of ``user_id``, ``(item_ids, ts)`` oldest first."""
        with self._lock:
            try:
                got = self._db.execute(NEWEST, (int(user_id), int(n))).fetchall()
            except sqlite3.Error as exc:
                raise EventStoreError(f"reading user {user_id} from {self.path}: {exc}") from exc
        if not got:
            z = np.zeros(0, dtype=np.int64)
            return z, z.copy()
        arr = np.asarray(got[::-1], dtype=np.int64)
        return arr[:, 0].copy(), arr[:, 1].copy()

    def since(self, cursor: int, limit: int) -> tuple[int, np.ndarray, np.ndarray]:
        """At most ``limit`` events with ``seq > cursor`` (``seq`` is AUTOINCREMENT: never
        reused, so a cursor stays valid), ``(last seq, item_ids, ts)``."""
        with self._lock:
            try:
                got = self._db.execute(SINCE, (int(cursor), int(limit))).fetchall()
            except sqlite3.Error as exc:
                raise EventStoreError(
                    f"reading events after {cursor} from {self.path}: {exc}"
                ) from exc
        if not got:
            z = np.zeros(0, dtype=np.int64)
            return int(cursor), z, z.copy()
        arr = np.asarray(got, dtype=np.int64)
        return int(arr[-1, 0]), arr[:, 1].copy(), arr[:, 2].copy()

    def count(self, user_id: int | None = None) -> int:
        """Events stored (for ``user_id``, or in all)."""
        with self._lock:
            if user_id is None:
                return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM events WHERE user_id = ?", (int(user_id),)
                ).fetchone()[0]
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
