"""The event store's data and contract, shared by the SQLite and Redis backends.

An event is (``user_id``, ``item_id``, ``ts`` unix seconds, ``event_type``). A store keeps the
newest ``max_per_user`` events of each user (newest by ``ts``, ties by arrival) and drops older
ones in the same write. Writes are atomic per call: :meth:`EventStore.append` stores every event
of the batch or none, and when it returns the events are durable (they survive a crash of the
process; see each backend for power loss).

Every store also answers :meth:`EventStore.since`: the events recorded after a cursor, in
arrival order, for readers of the whole stream (the retriever's moving prior,
serving/prior_stream.py). The cursor is an integer that grows with every event (SQLite's
rowid, Redis's event counter); 0 reads from the first event still kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "DEFAULT_MAX_PER_USER",
    "EVENT_TYPES",
    "EventBatch",
    "EventStore",
    "EventStoreError",
]

#: Allowed event types, in funnel order (the data set's ``events.event_type`` values,
#: towers.data.schema.EVENT_TYPES; a test keeps the two equal). Stored as their index here.
EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")

#: Events kept per user by default; the user tower uses the newest ``MAX_HISTORY`` (20) of them.
DEFAULT_MAX_PER_USER = 100


class EventStoreError(RuntimeError):
    """The store could not be opened, read or written (the message says which and why)."""


@dataclass(frozen=True)
class EventBatch:
    """Events as parallel arrays: ``user_ids``, ``item_ids``, ``ts`` (unix s) and ``types``
    (index into :data:`EVENT_TYPES`), all int64 ``[n]``."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    ts: np.ndarray
    types: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        for name in ("item_ids", "ts", "types"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"EventBatch: {name} has {len(getattr(self, name))} entries, user_ids {n}"
                )

    @classmethod
    def of(
        cls,
        user_ids: object,
        item_ids: object,
        ts: object,
        types: object,
    ) -> EventBatch:
        """A batch from sequences (anything ``np.asarray`` takes), as int64 vectors."""

        def vec(x: object) -> np.ndarray:
            return np.asarray(x, dtype=np.int64).reshape(-1)

        return cls(vec(user_ids), vec(item_ids), vec(ts), vec(types))

    def __len__(self) -> int:
        return len(self.user_ids)

    def take(self, rows: np.ndarray) -> EventBatch:
        return EventBatch(self.user_ids[rows], self.item_ids[rows], self.ts[rows], self.types[rows])


class EventStore(Protocol):
    """Where live events live. Implementations: SqliteEventStore, RedisEventStore."""

    #: Events kept per user (older ones are dropped on write).
    max_per_user: int

    def append(self, batch: EventBatch) -> int:
        """Store every event of ``batch`` or none (raises :class:`EventStoreError`); durable
        when it returns. Returns the number stored."""
        ...

    def recent(self, user_id: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``n`` events of ``user_id`` as ``(item_ids, ts)`` int64, oldest first;
        empty when the user has none."""
        ...

    def since(self, cursor: int, limit: int) -> tuple[int, np.ndarray, np.ndarray]:
        """At most ``limit`` events recorded after ``cursor``, in arrival order: ``(cursor of
        the last one returned (``cursor`` when none), item_ids, ts)``, int64. Events already
        trimmed (a user's older events past ``max_per_user``, a capped stream) are gone."""
        ...

    def close(self) -> None: ...
