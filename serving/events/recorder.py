"""Checking and recording live events: the logic of the ``events`` Triton model.

A request is a batch of events (one user or many). **A batch is recorded whole or not at all**:
if any event is bad, the request is refused with an error that lists every bad event (index,
user, what was wrong, what is allowed) and nothing of it is stored, so a client never has to
guess which half of a batch got in. The events refused are counted by reason
(:attr:`EventRecorder.refused`) and logged.

An event is bad when

* its ``item_id`` is not in the served catalog;
* its ``event_type`` is not one of :data:`serving.events.store.EVENT_TYPES`;
* its ``ts`` (unix s) is negative or more than ``max_skew_s`` (default 60 s) ahead of this
  server's clock;
* its ``user_id`` is negative (-1 is the anonymous user, who has no history to add to);
* its user is over the rate limit: a token bucket per user of ``burst_per_user`` events
  refilled at ``rate_per_user_s`` events per second. The buckets live in this process: with
  several ``events`` model instances each has its own (the default is one instance).

A batch of more than ``max_batch`` events is refused as a whole too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from serving.catalog import ItemRows
from serving.errors import RequestError
from serving.events.store import EVENT_TYPES, EventBatch, EventStore
from serving.tensors import int_vector, require

log = logging.getLogger(__name__)

__all__ = ["EventPolicy", "EventRecorder", "RateLimiter", "decode_types"]

#: Problems listed in full in a refusal; the rest are counted.
MAX_LISTED = 5


@dataclass(frozen=True)
class EventPolicy:
    """Limits on incoming events: ``max_skew_s`` seconds an event may be ahead of the server's
    clock; ``rate_per_user_s`` events per second per user with bursts of ``burst_per_user``;
    ``max_batch`` events per request."""

    max_skew_s: float = 60.0
    rate_per_user_s: float = 20.0
    burst_per_user: int = 40
    max_batch: int = 10_000

    def __post_init__(self) -> None:
        if self.max_skew_s < 0:
            raise ValueError(f"max_skew_s must be >= 0, got {self.max_skew_s}")
        if not self.rate_per_user_s > 0:
            raise ValueError(f"rate_per_user_s must be > 0, got {self.rate_per_user_s}")
        if self.burst_per_user < 1 or self.max_batch < 1:
            raise ValueError(
                f"burst_per_user and max_batch must be >= 1, got {self.burst_per_user} and "
                f"{self.max_batch}"
            )


class RateLimiter:
    """Token buckets per user: ``burst`` tokens, refilled at ``rate_s`` per second (``clock``
    in seconds). :meth:`try_take` takes tokens for several users at once or none."""

    #: Buckets kept before full ones are forgotten (a full bucket equals a missing one).
    MAX_BUCKETS = 100_000

    def __init__(self, rate_s: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate_s = rate_s
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # user -> (tokens, at)
        self._lock = threading.Lock()

    def _tokens(self, user: int, now: float) -> float:
        tokens, at = self._buckets.get(user, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate_s)

    def try_take(self, counts: Mapping[int, int]) -> dict[int, float]:
        """Take ``counts[user]`` tokens from each user's bucket when every user has enough;
        otherwise take none and return, for each user short of tokens, the seconds until
        they would have enough (``inf`` when the count exceeds the burst)."""
        with self._lock:
            now = self.clock()
            short = {}
            for user, n in counts.items():
                have = self._tokens(user, now)
                if have < n:
                    short[user] = (n - have) / self.rate_s if n <= self.burst else float("inf")
            if short:
                return short
            for user, n in counts.items():
                self._buckets[user] = (self._tokens(user, now) - n, now)
            if len(self._buckets) > self.MAX_BUCKETS:
                self._buckets = {
                    u: (t, at)
                    for u, (t, at) in self._buckets.items()
                    if t + (now - at) * self.rate_s < self.burst
                }
            return {}


def decode_types(arr: np.ndarray, name: str = "EVENT_TYPES") -> list[str]:
    """Event type names from a BYTES ``[n]`` tensor (UTF-8; ``str`` items taken as they are)."""
    out = []
    for value in np.asarray(arr, dtype=object).reshape(-1):
        if isinstance(value, bytes | np.bytes_):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(f"{name} must hold UTF-8 text") from None
        out.append(str(value))
    return out


class EventRecorder:
    """Checks events against the catalog ``item_ids`` and ``policy`` and writes good batches
    to ``store``. ``clock()`` is the server's time in unix seconds."""

    def __init__(
        self,
        store: EventStore,
        item_ids: np.ndarray,
        *,
        policy: EventPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.items = ItemRows(np.asarray(item_ids, dtype=np.int64))
        self.policy = policy or EventPolicy()
        self.clock = clock
        self.limiter = RateLimiter(self.policy.rate_per_user_s, self.policy.burst_per_user, clock)
        #: Events refused since start, by reason (``unknown_item``, ``unknown_type``,
        #: ``future_time``, ``negative_time``, ``bad_user``, ``rate_limited``, ``batch_size``,
        #: ``in_bad_batch`` for good events refused with a bad one).
        self.refused: Counter[str] = Counter()
        #: Events recorded since start.
        self.recorded = 0

    def type_codes(self, names: list[str]) -> np.ndarray:
        """Index of each name in :data:`EVENT_TYPES`; -1 for an unknown one."""
        lookup = {t: i for i, t in enumerate(EVENT_TYPES)}
        return np.array([lookup.get(n, -1) for n in names], dtype=np.int64)

    def problems(
        self, batch: EventBatch, type_names: list[str] | None = None
    ) -> list[tuple[int, str]]:
        """``(index, what is wrong)`` for each problem of each bad event of ``batch`` (empty
        when all are good), counted in :attr:`refused` by reason. ``type_names`` are the names
        as sent, for the messages."""
        names = type_names or [
            EVENT_TYPES[t] if 0 <= t < len(EVENT_TYPES) else str(t) for t in batch.types.tolist()
        ]
        _, known = self.items.lookup(batch.item_ids)
        latest = self.clock() + self.policy.max_skew_s
        out: list[tuple[int, str]] = []
        for i in range(len(batch)):
            user, item, ts = (int(batch.user_ids[i]), int(batch.item_ids[i]), int(batch.ts[i]))
            wrong = []
            if user < 0:
                wrong.append(("bad_user", f"user id {user} is negative (need >= 0)"))
            if not known[i]:
                wrong.append(("unknown_item", f"item id {item} is not in the catalog"))
            if not 0 <= batch.types[i] < len(EVENT_TYPES):
                wrong.append(
                    (
                        "unknown_type",
                        f"event type {names[i]!r} is not one of {', '.join(EVENT_TYPES)}",
                    )
                )
            if ts < 0:
                wrong.append(("negative_time", f"time {ts} is negative (unix seconds)"))
            elif ts > latest:
                wrong.append(
                    (
                        "future_time",
                        f"time {ts} is {ts - latest + self.policy.max_skew_s:.0f} s in the "
                        f"future (at most {self.policy.max_skew_s:g} s allowed)",
                    )
                )
            for reason, text in wrong:
                self.refused[reason] += 1
                out.append((i, f"event {i} (user {user}): {text}"))
        return out

    def record(self, batch: EventBatch, type_names: list[str] | None = None) -> int:
        """Check ``batch`` and store it whole, or raise :class:`RequestError` saying why none of
        it was stored. Returns the number of events recorded."""
        n = len(batch)
        if n == 0:
            return 0
        if n > self.policy.max_batch:
            self.refused["batch_size"] += n
            raise RequestError(
                f"{n} events in one request; at most {self.policy.max_batch}: split the batch"
            )
        bad = self.problems(batch, type_names)
        if bad:
            self.refused["in_bad_batch"] += n - len({i for i, _ in bad})
            listed = "; ".join(text for _, text in bad[:MAX_LISTED])
            more = f"; and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
            log.warning("refused a batch of %d events: %s%s", n, listed, more)
            raise RequestError(
                f"refused all {n} events of this request (none recorded; a batch is recorded "
                f"whole or not at all): {listed}{more}"
            )
        users, counts = np.unique(batch.user_ids, return_counts=True)
        short = self.limiter.try_take(dict(zip(users.tolist(), counts.tolist())))
        if short:
            self.refused["rate_limited"] += n
            user, wait_s = next(iter(short.items()))
            hint = (
                f"retry in {wait_s:.1f} s"
                if np.isfinite(wait_s)
                else f"send at most {self.policy.burst_per_user} events of one user per request"
            )
            log.warning("rate limit: refused %d events (users %s)", n, sorted(short))
            raise RequestError(
                f"refused all {n} events of this request (none recorded): user {user} is over "
                f"the rate limit of {self.policy.rate_per_user_s:g} events/s (bursts of "
                f"{self.policy.burst_per_user}); {hint}"
            )
        self.store.append(batch)
        self.recorded += n
        return n

    def warm_up(self) -> None:
        """Run what a request runs except the write: check one good event (the first catalog
        item, now) and read one user's events from the store. Nothing is stored or counted."""
        if len(self.items):
            first = int(self.items.item_ids[0])
            self.problems(EventBatch.of([0], [first], [int(self.clock())], [0]))
        self.store.recent(0, 1)

    def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Triton tensors ``USER_IDS``, ``ITEM_IDS``, ``TS`` (unix s) int64 ``[n]`` and
        ``EVENT_TYPES`` BYTES ``[n]`` -> ``N_RECORDED`` int64 ``[1]``."""
        user_ids = int_vector(require(tensors, "USER_IDS"), "USER_IDS")
        item_ids = int_vector(require(tensors, "ITEM_IDS"), "ITEM_IDS")
        ts = int_vector(require(tensors, "TS"), "TS")
        names = decode_types(require(tensors, "EVENT_TYPES"))
        lengths = {len(user_ids), len(item_ids), len(ts), len(names)}
        if len(lengths) != 1:
            raise RequestError(
                f"USER_IDS, ITEM_IDS, TS and EVENT_TYPES must have one entry per event; got "
                f"{len(user_ids)}, {len(item_ids)}, {len(ts)} and {len(names)}"
            )
        batch = EventBatch(user_ids, item_ids, ts, self.type_codes(names))
        n = self.record(batch, names)
        return {"N_RECORDED": np.array([n], dtype=np.int64)}
