"""The ``events`` and ``user_tower`` model files of a written repository (model.py as the server
loads it, with a stand-in pb_utils): an event recorded through ``events`` is the history the
user tower uses for that user; a bad batch gets an error response and stores nothing."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from serving.events.settings import EventSettings, configure_repository


@pytest.fixture
def repo(repository: Path, tmp_path: Path) -> Path:
    """A copy of the session repository (never modified) with its own event store."""
    copy = tmp_path / "repository"
    shutil.copytree(repository, copy)
    configure_repository(copy, EventSettings("sqlite", tmp_path / "events.sqlite"))
    return copy


def events_request(pb_utils, users, items, ts, types):
    return pb_utils.InferenceRequest(
        USER_IDS=np.asarray(users, np.int64),
        ITEM_IDS=np.asarray(items, np.int64),
        TS=np.asarray(ts, np.int64),
        EVENT_TYPES=np.array([t.encode() for t in types], dtype=object),
    )


def tower_request(pb_utils, user_id: int):
    empty = np.zeros(0, np.int64)
    return pb_utils.InferenceRequest(
        INPUT_IDS=np.array([[101, 102]], np.int64),
        ATTENTION_MASK=np.ones((1, 2), np.int64),
        HAS_QUERY=np.zeros((1, 1), np.float32),
        USER_ID=np.array([user_id], np.int64),
        HISTORY_IDS=empty,
        HISTORY_TS=empty,
    )


def test_recorded_events_become_the_users_history(repo, load_model, fake_pb_utils, tmp_path):
    events = load_model(repo, "events")
    tower = load_model(repo, "user_tower")
    items = np.load(repo / "events" / "1" / "item_ids.npy")
    user = 987_654_321  # not in the bundle's stored histories
    (before,) = tower.execute([tower_request(fake_pb_utils, user)])
    assert before.has_error() and "no known history" in before.error().message()
    now = int(time.time())
    good = events_request(fake_pb_utils, [user, user], items[:2], [now - 1, now], ["view"] * 2)
    bad = events_request(fake_pb_utils, [user, user], [items[3], -5], [now, now], ["click"] * 2)
    ok, refused = events.execute([good, bad])
    assert not ok.has_error() and ok.outputs()["N_RECORDED"].tolist() == [2]
    message = refused.error().message()
    assert "refused all 2 events" in message and "item id -5 is not in the catalog" in message
    (after,) = tower.execute([tower_request(fake_pb_utils, user)])
    assert not after.has_error()
    assert after.outputs()["HISTORY_USED"].tolist() == items[:2].tolist()  # not items[3]
    assert (tmp_path / "events.sqlite").is_file()
    events.finalize()
