"""The event store on Redis (several servers share one history per user).

Each user is a sorted set ``<prefix>u:<user_id>``: score the event time (unix s), member
``<seq>:<item_id>:<type>`` with ``seq`` a zero-padded number from the counter ``<prefix>seq``
(unique, so a repeated item is kept twice, and ties in time sort by arrival). A write takes
``len(batch)`` numbers from the counter, then adds every event and trims each touched user to its
newest ``max_per_user`` in one ``MULTI``/``EXEC`` transaction: all events or none.

The same transaction adds each event to one capped sorted set ``<prefix>all`` (score its
``seq``, member ``<seq>:<item_id>:<ts>``; the newest ``stream_cap`` kept): the whole stream in
arrival order, which :meth:`RedisEventStore.since` reads after a cursor (``ZRANGEBYSCORE``).

Durability is the Redis server's: run it with ``--appendonly yes --appendfsync always`` for an
acknowledged event to survive a crash of Redis itself (the tests do); a towerserve process
crash loses nothing either way, since the write is done when :meth:`RedisEventStore.append`
returns.
"""

from __future__ import annotations

import logging
from typing import cast

import numpy as np

from serving.events.store import DEFAULT_MAX_PER_USER, EventBatch, EventStoreError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PREFIX", "RedisEventStore"]

DEFAULT_PREFIX = "towerserve:events:"
#: Events kept in the global stream ``<prefix>all`` (readers more than this far behind miss
#: the oldest: the moving prior logs a gap).
DEFAULT_STREAM_CAP = 100_000


class RedisEventStore:
    """Events in the Redis server at ``url`` (``redis://host:port/db``); ``timeout_s`` bounds
    each command. Connects lazily; the first failing command raises :class:`EventStoreError`."""

    def __init__(
        self,
        url: str,
        *,
        max_per_user: int = DEFAULT_MAX_PER_USER,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = 2.0,
        stream_cap: int = DEFAULT_STREAM_CAP,
    ) -> None:
        import redis

        if max_per_user < 1:
            raise ValueError(f"max_per_user must be >= 1, got {max_per_user}")
        if not url:
            raise EventStoreError("the redis event store needs a URL (redis://host:port/db)")
        self.url = url
        if stream_cap < 1:
            raise ValueError(f"stream_cap must be >= 1, got {stream_cap}")
        self.max_per_user = max_per_user
        self.stream_cap = stream_cap
        self.prefix = prefix
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        try:
            self._redis = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
        except ValueError as exc:
            raise EventStoreError(f"bad redis URL {url!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"RedisEventStore({self.url!r}, max_per_user={self.max_per_user})"

    def _key(self, user_id: int) -> str:
        return f"{self.prefix}u:{int(user_id)}"

    @property
    def _stream_key(self) -> str:
        return f"{self.prefix}all"

    def ping(self) -> None:
        """Raise :class:`EventStoreError` when the server cannot be reached."""
        try:
            self._redis.ping()
        except self._errors as exc:
            raise EventStoreError(f"redis at {self.url} is not reachable: {exc}") from exc

    def append(self, batch: EventBatch) -> int:
        """Add all events of ``batch`` and trim the touched users, in one transaction."""
        n = len(batch)
        if n == 0:
            return 0
        try:
            last = int(self._redis.incrby(f"{self.prefix}seq", n))
            pipe = self._redis.pipeline(transaction=True)
            members: dict[str, dict[str, int]] = {}
            stream: dict[str, int] = {}
            for i, (user, item, ts, kind) in enumerate(
                zip(
                    batch.user_ids.tolist(),
                    batch.item_ids.tolist(),
                    batch.ts.tolist(),
                    batch.types.tolist(),
                )
            ):
                seq = last - n + 1 + i
                members.setdefault(self._key(user), {})[f"{seq:020d}:{item}:{kind}"] = ts
                stream[f"{seq:020d}:{item}:{ts}"] = seq
            for key, mapping in members.items():
                pipe.zadd(key, mapping)
                pipe.zremrangebyrank(key, 0, -self.max_per_user - 1)
            pipe.zadd(self._stream_key, stream)
            pipe.zremrangebyrank(self._stream_key, 0, -self.stream_cap - 1)
            pipe.execute()
        except self._errors as exc:
            raise EventStoreError(f"writing {n} events to redis at {self.url}: {exc}") from exc
        return n

    def recent(self, user_id: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``n`` events of ``user_id``, ``(item_ids, ts)`` oldest first."""
        try:
            got = cast(
                "list[tuple[bytes, float]]",
                self._redis.zrange(self._key(user_id), -int(n), -1, withscores=True),
            )
        except self._errors as exc:
            raise EventStoreError(
                f"reading user {user_id} from redis at {self.url}: {exc}"
            ) from exc
        items = np.fromiter(
            (int(m.split(b":", 2)[1]) for m, _ in got), dtype=np.int64, count=len(got)
        )
        ts = np.fromiter((int(s) for _, s in got), dtype=np.int64, count=len(got))
        return items, ts

    def since(self, cursor: int, limit: int) -> tuple[int, np.ndarray, np.ndarray]:
        """At most ``limit`` events of the stream with ``seq > cursor``, ``(last seq,
        item_ids, ts)``."""
        try:
            got = cast(
                "list[bytes]",
                self._redis.zrangebyscore(
                    self._stream_key, f"({int(cursor)}", "+inf", start=0, num=int(limit)
                ),
            )
        except self._errors as exc:
            raise EventStoreError(
                f"reading events after {cursor} from redis at {self.url}: {exc}"
            ) from exc
        if not got:
            z = np.zeros(0, dtype=np.int64)
            return int(cursor), z, z.copy()
        arr = np.asarray([[int(x) for x in m.split(b":")] for m in got], dtype=np.int64)
        return int(arr[-1, 0]), arr[:, 1].copy(), arr[:, 2].copy()

    def count(self, user_id: int | None = None) -> int:
        """Events stored (for ``user_id``, or in all: a SCAN, for tests and tools only)."""
        try:
            if user_id is not None:
                return int(self._redis.zcard(self._key(user_id)))
            return sum(
                int(self._redis.zcard(k)) for k in self._redis.scan_iter(f"{self.prefix}u:*")
            )
        except self._errors as exc:
            raise EventStoreError(f"counting events in redis at {self.url}: {exc}") from exc

    def close(self) -> None:
        self._redis.close()
