"""One SQLite file shared by several processes: WAL mode, full fsync, a busy timeout.

Used by the event store (serving/events) and the item change log (serving/item_changes.py):
a write is acknowledged only after its transaction is on disk (``synchronous = FULL``), and
WAL lets readers in other processes (Triton model instances) run beside the one writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path


def open_wal(
    path: Path, schema: Iterable[str], *, busy_timeout_ms: int = 5000
) -> sqlite3.Connection:
    """Open (or create) ``path`` in WAL mode and apply the ``schema`` statements.

    ``busy_timeout_ms`` is how long a write waits for another writer. Transactions are the
    caller's (``isolation_level=None``: explicit BEGIN/COMMIT). Raises :class:`sqlite3.Error`
    (or :class:`OSError` for the folder) when the file cannot be opened or refuses WAL mode.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(
        path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        db.execute("PRAGMA synchronous = FULL")
        for statement in schema:
            db.execute(statement)
    except sqlite3.Error:
        db.close()
        raise
    return db
