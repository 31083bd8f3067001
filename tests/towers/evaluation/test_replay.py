"""The replay protocol (towers/evaluation/replay.py) with stand-in recommenders: which events
are asked about, what is excluded, that an event is recorded only after it was asked about,
and the per-user arithmetic. The served path itself is tested in
tests/serving/events/test_events_server.py (tiny trained model, real store, real server)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from towers.evaluation.replay import (
    VARIANTS,
    Variant,
    histories_at,
    replay_markdown,
    replay_task,
    run_replay,
)

CUT = 1000


def log(rows: list[tuple[int, int, int, str]]) -> pd.DataFrame:
    """(user, item, ts, type) rows."""
    return pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "event_type"])


EVENTS = log(
    [
        (1, 10, 100, "view"),
        (1, 11, 200, "click"),
        (2, 20, 300, "view"),
        (1, 12, CUT + 5, "view"),  # query: new for user 1
        (3, 30, CUT + 6, "view"),  # user 3 has no history before the cut: never asked
        (1, 12, CUT + 7, "click"),  # not new any more
        (2, 10, CUT + 8, "purchase"),  # query
        (1, 10, CUT + 9, "view"),  # seen before the cut: not a query
        (3, 31, CUT + 10, "view"),
        (1, 13, CUT + 1, "view"),  # out of time order in the log: replayed first, a query
    ]
)


def test_task_asks_about_first_interactions_of_users_with_history() -> None:
    task = replay_task(EVENTS, CUT)
    assert task.events["ts"].tolist() == sorted(task.events["ts"].tolist())
    asked = task.events.iloc[task.queries][["user_id", "item_id"]].values.tolist()
    assert asked == [[1, 13], [1, 12], [2, 10]]
    assert [sorted(x.tolist()) for x in task.excluded] == [[10, 11], [10, 11, 13], [20]]
    assert len(replay_task(EVENTS, CUT, max_users=1, seed=3)) in (1, 2)  # one user's queries
    with pytest.raises(ValueError, match="no events at or after the cut"):
        replay_task(EVENTS, 10**9)


def test_histories_at_the_cut_leave_the_held_out_period_out() -> None:
    users, offsets, items, ts = histories_at(EVENTS, CUT, n=1)
    assert users.tolist() == [1, 2] and offsets.tolist() == [0, 1, 2]
    assert items.tolist() == [11, 20] and ts.tolist() == [200, 300]


def test_replay_records_each_event_after_it_was_asked_about() -> None:
    """A stand-in "live" recommender that recommends what was recorded most recently, and a
    "frozen" one that recommends a fixed list: live wins exactly where the stream helps."""
    task = replay_task(EVENTS, CUT)
    recorded: list[tuple[int, int]] = []
    asked_with: list[int] = []

    def record(chunk: pd.DataFrame) -> None:
        recorded.extend(zip(chunk["user_id"].tolist(), chunk["item_id"].tolist(), strict=True))

    def recommend(variant: Variant, user: int, k: int) -> list[int]:
        asked_with.append(len(recorded))
        if variant.history == "live":  # the items of everything recorded so far, newest first
            return [item for _, item in reversed(recorded)][:k] + [12, 10]
        return [99]

    out = run_replay(task, recommend, record, k=2, max_k=5)
    assert len(recorded) == len(task.events)  # every event recorded once, in order
    assert recorded == list(zip(task.events["user_id"], task.events["item_id"], strict=True))
    assert asked_with[:4] == [0, 0, 0, 0]  # the first query: nothing recorded yet
    rows = out["variants"]
    frozen = rows[VARIANTS[0].name]
    live = rows[VARIANTS[2].name]
    assert frozen["recall@2"] == 0.0 and frozen["n_users"] == 2 and frozen["n_queries"] == 3
    # user 1: (1,13) misses (nothing recorded: [12]), (1,12) hits ([13 excluded, 12]);
    # user 2: (2,10) misses ([12, 30] are the newest) -> users 0.5 and 0.0
    assert live["recall@2"] == pytest.approx(0.25) and live["event_recall"] == pytest.approx(1 / 3)
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["replay: live history beats frozen history (Recall@2)"]["status"] == (
        "inconclusive"  # 2 users, not 200
    )
    assert out["short_lists"] > 0  # the frozen stand-in returns one item
    text = "\n".join(replay_markdown(out))
    assert "live history, moving prior" in text and "inconclusive" in text
    assert replay_markdown(None) == []


def test_requests_ask_for_k_plus_the_excluded_up_to_max_k() -> None:
    task = replay_task(EVENTS, CUT)
    asked: list[int] = []

    def recommend(variant: Variant, user: int, k: int) -> list[int]:
        asked.append(k)
        return list(range(100, 100 + k))

    run_replay(task, recommend, lambda chunk: None, k=2, max_k=4, variants=VARIANTS[:1])
    assert asked == [4, 4, 3]  # 2 + excluded (2, 3, 1), at most max_k
    assert np.all(np.asarray(asked) <= 4)
