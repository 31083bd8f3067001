"""Serve-time settings of the live event store, and what the user tower reads from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.events.recorder import EventRecorder
from serving.events.settings import (
    EventSettings,
    LiveHistory,
    configure_repository,
    default_path,
    live_history,
    open_store,
)
from serving.events.sqlite_store import SqliteEventStore
from serving.events.stage import policy_from_params
from serving.events.store import EventBatch
from serving.stage_params import repository_params
from serving.user_tower import StoredHistory, UserEncoder

ROOT = Path(__file__).resolve().parents[3]
ITEM_IDS = np.arange(100, 150, dtype=np.int64)
VECTORS = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)


def test_defaults_put_an_sqlite_file_beside_the_repository(tmp_path) -> None:
    repo = tmp_path / "repo"
    settings = EventSettings.from_params({}, repo)
    assert settings.store == "sqlite" and settings.path == tmp_path / "repo.events.sqlite"
    assert default_path(repo) == tmp_path.resolve() / "repo.events.sqlite"
    store = open_store(settings)
    assert isinstance(store, SqliteEventStore) and store.path.is_file()
    store.close()
    off = EventSettings.from_params({"events_store": "off"}, repo)
    assert open_store(off) is None and live_history({"events_store": "off"}, repo) is None


def test_bad_settings_say_what_is_allowed(tmp_path) -> None:
    with pytest.raises(ValueError, match="one of sqlite, redis, off, got 'mysql'"):
        EventSettings.from_params({"events_store": "mysql"}, tmp_path)
    with pytest.raises(ValueError, match="events_per_user must be an integer"):
        EventSettings.from_params({"events_per_user": "many"}, tmp_path)
    with pytest.raises(ValueError, match="rate_per_user_s must be > 0"):
        policy_from_params({"rate_per_user_s": "0"})
    assert policy_from_params({"max_skew_s": "5", "burst_per_user": "3"}).max_skew_s == 5
    with pytest.raises(ValueError, match="prior must be one of moving, frozen, got 'live'"):
        EventSettings.from_params({"prior": "live"}, tmp_path)
    with pytest.raises(ValueError, match="prior_refresh_s must be a number"):
        EventSettings.from_params({"prior_refresh_s": "soon"}, tmp_path)
    with pytest.raises(ValueError, match="prior refresh must be >= 0 seconds"):
        EventSettings(prior_refresh_s=-1.0)
    assert EventSettings.from_params({}, tmp_path).prior == "moving"


def test_configure_repository_reaches_every_event_model(tmp_path) -> None:
    """``serve --events`` rewrites the parameters of user_tower, events and retriever
    (templates as a stand-in repository), keeping the comment header and the other
    parameters."""
    repo = tmp_path / "repo"
    for model in ("user_tower", "events", "retriever"):
        (repo / model).mkdir(parents=True)
        shutil.copy(ROOT / "model_repository" / model / "config.pbtxt", repo / model)
    settings = EventSettings("redis", None, "redis://10.0.0.5:6380/2", 30, "frozen", 0.5)
    configure_repository(repo, settings)
    _, params = repository_params(repo, "retriever")
    assert params["prior"] == "frozen" and params["prior_refresh_s"] == "0.5"
    assert EventSettings.from_params(params, repo).prior_refresh_s == 0.5
    for model in ("user_tower", "events", "retriever"):
        _, params = repository_params(repo, model)
        assert params["events_store"] == "redis" and params["events_per_user"] == "30"
        assert params["redis_url"] == "redis://10.0.0.5:6380/2"
        assert "model_version" in params
        assert (repo / model / "config.pbtxt").read_text().startswith("#")
    configure_repository(repo, EventSettings("sqlite"))
    _, params = repository_params(repo, "events")
    assert params["events_path"] == str(default_path(repo)) and params["rate_per_user_s"] == "20"
    shutil.rmtree(repo / "events")
    with pytest.raises(FileNotFoundError, match="predates live events.*towerserve export"):
        configure_repository(repo, settings)


def test_live_history_degrades_when_the_store_fails() -> None:
    from serving.events.redis_store import RedisEventStore
    from serving.triton import free_port

    live = LiveHistory(RedisEventStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2))
    ids, ts = live.lookup(3, 5)
    assert len(ids) == 0 and len(ts) == 0 and live.failures == 1
    assert len(live.lookup(-1, 5)[0]) == 0 and live.failures == 1  # anonymous: not asked


def test_user_tower_reads_live_events_merged_with_stored_history(make_store) -> None:
    store = make_store()
    stored = StoredHistory(
        np.array([7]), np.array([0, 2]), np.array([110, 111]), np.array([1000, 2000])
    )
    enc = UserEncoder(
        ITEM_IDS,
        VECTORS,
        recency_tau_s=3600.0,
        stored=stored,
        live=LiveHistory(store),
        encode_fn=lambda **f: np.ones((1, 4), np.float32),
    )
    empty = np.zeros(0, np.int64)
    assert enc.resolve_history(7, empty, empty).source == "stored"
    assert enc.resolve_history(9, empty, empty).source == "none"
    recorder = EventRecorder(store, ITEM_IDS, clock=lambda: 5000.0)
    recorder.record(EventBatch.of([7, 9, 9], [120, 131, 130], [1500, 20, 10], [0, 1, 3]))
    h = enc.resolve_history(7, empty, empty)  # merged by time with the bundle's history
    assert h.source == "live" and h.item_ids.tolist() == [110, 120, 111]
    h = enc.resolve_history(9, empty, empty)  # a user the bundle never saw
    assert h.source == "live" and h.item_ids.tolist() == [130, 131]
    assert h.ts.tolist() == [10, 20] and h.rows.tolist() == [30, 31]
    # a request's own history still wins; anonymous users never read the store
    assert enc.resolve_history(7, np.array([140]), np.array([1])).source == "request"
    assert enc.resolve_history(-1, empty, empty).source == "none"
