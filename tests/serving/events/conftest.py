"""Fixtures of the live-event tests: a real ``redis-server`` (skipped cleanly where the binary
is missing) and a store of either backend."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.events.store import EventStore


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    """A private redis-server on a free loopback port, data in ``folder``, every write
    fsynced to its append-only file: ``(process, url)``."""
    import redis

    from serving.triton import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(folder),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"redis-server on port {port} did not start") from None
            time.sleep(0.05)
    client.close()
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def redis_control():
    """``(start_redis, stop)`` for tests that kill and restart a redis-server themselves."""
    return start_redis, stop


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[dict]:
    """``{"url", "process", "folder"}`` of a redis-server for the module."""
    folder = tmp_path_factory.mktemp("redis")
    proc, url = start_redis(folder)
    info = {"url": url, "process": proc, "folder": folder}
    try:
        yield info
    finally:
        stop(info["process"])


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def make_store(store_kind, tmp_path, request) -> Iterator:
    """``make_store(max_per_user=...) -> EventStore`` of the test's backend, each call a fresh
    (empty) store; closed at the end."""
    from serving.events.redis_store import RedisEventStore
    from serving.events.sqlite_store import SqliteEventStore

    made: list[EventStore] = []
    counter = iter(range(1_000_000))

    def make(max_per_user: int = 100) -> EventStore:
        n = next(counter)
        store: EventStore
        if store_kind == "sqlite":
            store = SqliteEventStore(tmp_path / f"events{n}.sqlite", max_per_user=max_per_user)
        else:
            server = request.getfixturevalue("redis_server")
            store = RedisEventStore(
                server["url"],
                max_per_user=max_per_user,
                prefix=f"test:{request.node.name}:{n}:",
            )
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
