"""The event stores (SQLite and a real redis-server): newest N per user, isolation between
users, atomic batches, and no acknowledged event lost when the writer is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from serving.events.store import EVENT_TYPES, EventBatch

ROOT = Path(__file__).resolve().parents[3]


def batch(user: int, items: list[int], ts: list[int], kind: int = 0) -> EventBatch:
    return EventBatch.of([user] * len(items), items, ts, [kind] * len(items))


def test_event_types_are_the_data_sets() -> None:
    from towers.data.schema import EVENT_TYPES as DATA_EVENT_TYPES

    assert EVENT_TYPES == DATA_EVENT_TYPES


def test_recent_is_newest_by_time_oldest_first(make_store) -> None:
    store = make_store()
    assert store.append(batch(7, [10, 11, 12], [300, 100, 200])) == 3
    ids, ts = store.recent(7, 10)
    assert ids.tolist() == [11, 12, 10] and ts.tolist() == [100, 200, 300]
    assert ids.dtype == np.int64 and ts.dtype == np.int64
    ids, ts = store.recent(7, 2)
    assert ids.tolist() == [12, 10] and ts.tolist() == [200, 300]
    ids, ts = store.recent(8, 10)  # unknown user: empty
    assert len(ids) == 0 and len(ts) == 0


def test_repeated_items_and_equal_times_keep_arrival_order(make_store) -> None:
    store = make_store()
    store.append(batch(1, [5, 5], [100, 100]))
    store.append(batch(1, [6], [100]))
    store.append(batch(1, [5], [100]))
    assert store.recent(1, 10)[0].tolist() == [5, 5, 6, 5]


def test_only_the_newest_n_per_user_are_kept(make_store) -> None:
    store = make_store(max_per_user=3)
    store.append(batch(1, [1, 2, 3, 4, 5], [10, 20, 30, 40, 50]))
    store.append(batch(2, [9], [5]))
    assert store.recent(1, 10)[0].tolist() == [3, 4, 5]
    store.append(batch(1, [0], [1]))  # older than all kept: trimmed at once
    assert store.recent(1, 10)[0].tolist() == [3, 4, 5]
    store.append(batch(1, [6], [60]))
    assert store.recent(1, 10)[0].tolist() == [4, 5, 6]
    assert store.count(1) == 3 and store.recent(2, 10)[0].tolist() == [9]


def test_a_batch_of_many_users_reaches_each(make_store) -> None:
    store = make_store(max_per_user=2)
    store.append(EventBatch.of([1, 2, 1, 3, 1], [10, 20, 11, 30, 12], [1, 2, 3, 4, 5], [0] * 5))
    assert store.recent(1, 5)[0].tolist() == [11, 12]
    assert store.recent(2, 5)[0].tolist() == [20]
    assert store.recent(3, 5)[0].tolist() == [30]
    assert store.append(EventBatch.of([], [], [], [])) == 0


def test_two_stores_on_the_same_place_see_each_others_writes(make_store, store_kind) -> None:
    """What the user tower sees of the events model's writes: another connection."""
    a = make_store()
    if store_kind == "sqlite":
        from serving.events.sqlite_store import SqliteEventStore

        b = SqliteEventStore(a.path)
    else:
        from serving.events.redis_store import RedisEventStore

        b = RedisEventStore(a.url, prefix=a.prefix)
    a.append(batch(4, [1], [1]))
    assert b.recent(4, 5)[0].tolist() == [1]
    b.append(batch(4, [2], [2]))
    assert a.recent(4, 5)[0].tolist() == [1, 2]
    b.close()


WRITER = textwrap.dedent(
    """
    import sys
    from serving.events.store import EventBatch
    kind, where = sys.argv[1], sys.argv[2]
    if kind == "sqlite":
        from serving.events.sqlite_store import SqliteEventStore
        store = SqliteEventStore(where, max_per_user=100000)
    else:
        from serving.events.redis_store import RedisEventStore
        store = RedisEventStore(where, max_per_user=100000, prefix="crash:")
    i = 0
    while True:
        store.append(EventBatch.of([i % 7, (i + 1) % 7], [i, i + 1], [i, i + 1], [0, 1]))
        print(i, flush=True)
        i += 2
    """
)


def test_no_acknowledged_event_is_lost_when_the_writer_is_killed(
    store_kind, tmp_path, request
) -> None:
    """A process appending as fast as it can is SIGKILLed after 300 acknowledged batches;
    every acknowledged event is in the store, and no batch is half there."""
    if store_kind == "sqlite":
        where = str(tmp_path / "crash.sqlite")
    else:
        where = request.getfixturevalue("redis_server")["url"]
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, store_kind, where],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acked = []
    assert proc.stdout is not None
    for line in proc.stdout:
        acked.append(int(line))
        if len(acked) >= 300:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if store_kind == "sqlite":
        from serving.events.sqlite_store import SqliteEventStore

        store = SqliteEventStore(where, max_per_user=100000)
    else:
        from serving.events.redis_store import RedisEventStore

        store = RedisEventStore(where, max_per_user=100000, prefix="crash:")
    stored = set()
    for user in range(7):
        stored.update(store.recent(user, 100000)[0].tolist())
    store.close()
    for i in acked:
        assert {i, i + 1} <= stored, i
    assert all(i + 1 in stored for i in stored if i % 2 == 0)  # no half batch
    assert all(i - 1 in stored for i in stored if i % 2 == 1)


def test_redis_killed_and_restarted_keeps_acknowledged_events(tmp_path, redis_control) -> None:
    """With ``--appendfsync always`` a SIGKILLed redis-server restarted on the same folder
    has every event acknowledged before the kill."""
    from serving.events.redis_store import RedisEventStore

    start_redis, stop = redis_control
    proc, url = start_redis(tmp_path)
    store = RedisEventStore(url)
    for i in range(50):
        store.append(batch(3, [i], [i]))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store.close()
    proc2, url2 = start_redis(tmp_path)
    try:
        again = RedisEventStore(url2)
        assert again.recent(3, 100)[0].tolist() == list(range(50))
        again.close()
    finally:
        stop(proc2)


def test_sqlite_file_is_in_wal_mode(tmp_path) -> None:
    import sqlite3

    from serving.events.sqlite_store import SqliteEventStore

    SqliteEventStore(tmp_path / "x" / "e.sqlite").close()
    db = sqlite3.connect(tmp_path / "x" / "e.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_settings_are_refused(tmp_path) -> None:
    from serving.events.redis_store import RedisEventStore
    from serving.events.sqlite_store import SqliteEventStore
    from serving.events.store import EventStoreError

    with pytest.raises(ValueError, match="max_per_user must be >= 1"):
        SqliteEventStore(tmp_path / "e.sqlite", max_per_user=0)
    with pytest.raises(EventStoreError, match="needs a URL"):
        RedisEventStore("")
    with pytest.raises(EventStoreError, match="bad redis URL"):
        RedisEventStore("http://nowhere")
    with pytest.raises(ValueError, match="item_ids has 1 entries, user_ids 2"):
        EventBatch.of([1, 2], [1], [1, 2], [0, 0])


def test_since_reads_the_stream_after_a_cursor_in_arrival_order(make_store) -> None:
    store = make_store()
    cursor, ids, ts = store.since(0, 10)
    assert cursor == 0 and len(ids) == 0 and len(ts) == 0  # empty store
    store.append(EventBatch.of([1, 2, 1], [10, 20, 11], [300, 100, 200], [0, 1, 2]))
    store.append(batch(3, [30], [50]))
    cursor, ids, ts = store.since(0, 2)  # a limit: the first two, then the rest
    assert ids.tolist() == [10, 20] and ts.tolist() == [300, 100]
    assert ids.dtype == np.int64 and ts.dtype == np.int64
    cursor, ids, ts = store.since(cursor, 10)
    assert ids.tolist() == [11, 30] and ts.tolist() == [200, 50]
    again, ids, _ = store.since(cursor, 10)  # nothing new: the cursor stays
    assert again == cursor and len(ids) == 0
    store.append(batch(1, [12], [400]))
    assert store.since(cursor, 10)[1].tolist() == [12]


def test_redis_stream_keeps_its_newest_events(redis_server) -> None:
    from serving.events.redis_store import RedisEventStore

    store = RedisEventStore(redis_server["url"], prefix="stream-cap:", stream_cap=3)
    try:
        store.append(batch(1, [1, 2, 3, 4, 5], [10, 20, 30, 40, 50]))
        assert store.since(0, 10)[1].tolist() == [3, 4, 5]
        with pytest.raises(ValueError, match="stream_cap"):
            RedisEventStore(redis_server["url"], stream_cap=0)
    finally:
        store.close()
