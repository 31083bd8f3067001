"""Live events on the real stack: tiny trained towers, FAISS, tritonserver, gRPC, the SQLite
store beside the repository.

One module-scoped server (plus one restart, in the last test): an event recorded through the
client is the history of the next ``recommend`` for that user; a bad batch is refused whole;
the CLI records and replays; a server SIGKILLed during writes and restarted has every
acknowledged event.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from client.cli import app
from client.events import EventsClient
from client.grpc_client import TowerServeClient, TowerServeError

pytestmark = pytest.mark.slow


def flat(output: str) -> str:
    """CLI output with rich's line wrapping taken out."""
    return " ".join(output.split())


def start_server(repository):
    from serving.triton import TritonServer, free_ports

    grpc_port, http_port, metrics_port = free_ports(3)
    server = TritonServer(
        repository, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port
    )
    server.start()
    try:
        server.wait_ready(timeout_s=300)
    except BaseException:
        server.stop()
        raise
    return server, f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    from export.bundle import build_bundle
    from export.repository import write_repository
    from serving.events.settings import EventSettings, configure_repository

    work = tmp_path_factory.mktemp("events_server")
    build_bundle(tiny_model["artifacts"], tiny_model["data"], work / "bundle")
    repository = write_repository(work / "bundle", work / "repository")
    configure_repository(repository, EventSettings("sqlite", work / "events.sqlite"))
    server, url = start_server(repository)
    state = {
        "server": server,
        "url": url,
        "repository": repository,
        "store_path": work / "events.sqlite",
        "data": tiny_model["data"],
        "items": np.load(work / "bundle" / "item_ids.npy"),
    }
    try:
        yield state
    finally:
        state["server"].stop()


def test_a_recorded_event_changes_the_next_recommendation(served) -> None:
    items = served["items"]
    events = pd.read_parquet(served["data"] / "events.parquet")
    known_user = int(events["user_id"].iloc[0])
    new_user = 900_000_001
    now = int(time.time())
    with TowerServeClient(served["url"]) as rec, EventsClient(served["url"]) as ev:
        with pytest.raises(TowerServeError, match="no known history for user 900000001"):
            rec.recommend("", user_id=new_user, k=10, budget_ms=0)
        assert ev.record(new_user, [int(items[5])], event_types="view", ts=now) == 1
        first = rec.recommend("", user_id=new_user, k=10, budget_ms=0)
        assert len(first.item_ids) == 10
        before = rec.recommend("", user_id=known_user, k=10, budget_ms=0)
        touched = set(events.loc[events["user_id"] == known_user, "item_id"].tolist())
        fresh = [int(i) for i in items[::-1] if int(i) not in touched][:3]
        assert ev.record(known_user, fresh, event_types="purchase", ts=now) == 3
        after = rec.recommend("", user_id=known_user, k=10, budget_ms=0)
    assert after.item_ids != before.item_ids


def test_a_batch_with_one_bad_event_is_refused_whole_by_the_server(served) -> None:
    from serving.events.sqlite_store import SqliteEventStore

    items = [int(i) for i in served["items"][:3]]
    user = 900_000_002
    now = int(time.time())
    with EventsClient(served["url"]) as ev:
        for bad in (
            {"item_ids": [*items, 10**12]},
            {"item_ids": items + [items[0]], "event_types": ["view"] * 3 + ["wishlist"]},
            {"item_ids": items + [items[0]], "ts": [now] * 3 + [now + 86_400]},
        ):
            with pytest.raises(TowerServeError, match="refused all 4 events.*event 3 "):
                ev.record(user, bad.pop("item_ids"), **bad)  # type: ignore[arg-type]
        store = SqliteEventStore(served["store_path"])
        assert store.count(user) == 0
        assert ev.record(user, items, ts=now) == 3
        assert store.recent(user, 10)[0].tolist() == items
        store.close()


def test_cli_add_and_replay(served, tmp_path) -> None:
    runner = CliRunner()
    item = str(int(served["items"][7]))
    out = runner.invoke(
        app, ["events", "add", "--user", "900000003", "--item", item, "--type", "click",
              "-u", served["url"]],
    )  # fmt: skip
    assert out.exit_code == 0 and "recorded 1 event(s) of user 900000003" in flat(out.output)
    out = runner.invoke(
        app, ["events", "add", "--user", "900000003", "--item", "-4", "-u", served["url"]]
    )
    assert out.exit_code == 1 and "item id -4 is not in the catalog" in flat(out.output)
    events = pd.read_parquet(served["data"] / "events.parquet").sort_values("ts").head(40)
    events["user_id"] += 800_000_000  # users of their own: the replay is all they have
    events.to_parquet(tmp_path / "events.parquet")
    out = runner.invoke(
        app, ["events", "replay", "--from", str(tmp_path), "--speed", "max", "--batch-size",
              "16", "-u", served["url"]],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "recorded 40 of 40 events in 3 requests" in flat(out.output)


def test_server_killed_during_writes_loses_no_acknowledged_event(served) -> None:
    """A writer records one event per request; after 100 acknowledgements the server and its
    stubs are SIGKILLed. The restarted server's store has every acknowledged event, and the
    user tower answers those users from it."""
    from serving.events.sqlite_store import SqliteEventStore

    items = served["items"]
    acked: list[tuple[int, int]] = []
    failed: list[Exception] = []

    def write() -> None:
        with EventsClient(served["url"], timeout_s=5) as ev:
            for i in range(100_000):
                user, item = 700_000_000 + i, int(items[i % len(items)])
                try:
                    ev.record(user, [item])
                except TowerServeError as exc:
                    failed.append(exc)
                    return
                acked.append((user, item))

    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 120
    while len(acked) < 100 and writer.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(acked) >= 100, failed
    os.killpg(served["server"].pid, signal.SIGKILL)
    writer.join(timeout=60)
    assert failed and not writer.is_alive()  # the writer saw the server go
    served["server"].stop()
    served["server"], served["url"] = start_server(served["repository"])
    store = SqliteEventStore(served["store_path"])
    for user, item in acked:
        assert store.recent(user, 5)[0].tolist() == [item], user
    store.close()
    with TowerServeClient(served["url"]) as rec:
        for user, _ in acked[-3:]:  # the newest acknowledged, written just before the kill
            assert len(rec.recommend("", user_id=user, k=5, budget_ms=0).item_ids) == 5
