"""Next-item tasks, history handling and recommendation metrics (no models needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from towers.evaluation.recommend import (
    cold_recall_per_user,
    exclude_history,
    history_matrix,
    next_item_task,
    pooled_history,
    score_recommendations,
)
from towers.features import MAX_HISTORY


def _events(rows: list[tuple[int, int, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])


EVENTS = _events(
    [
        (1, 10, "view", 100),
        (1, 11, "click", 110),
        (1, 12, "click", 210),  # in window: a new item
        (1, 11, "purchase", 220),  # in window but already in the history
        (2, 20, "view", 105),
        (2, 21, "view", 205),  # in window but not positive
        (3, 30, "click", 230),  # in window, no history: cold start
        (4, 40, "view", 90),
        (4, 41, "click", 400),  # after the window
    ]
)


def test_task_keeps_users_with_history_and_new_positives() -> None:
    task = next_item_task(EVENTS, 200, 300)
    assert task.user_ids.tolist() == [1]
    assert task.hist_ids[0].tolist() == [10, 11]
    assert task.hist_ts[0].tolist() == [100, 110]
    assert task.targets == [{12}]
    assert len(task) == 1


def test_task_history_is_capped_to_the_newest() -> None:
    rows = [(1, i, "view", i) for i in range(MAX_HISTORY + 5)] + [(1, 999, "click", 1000)]
    task = next_item_task(_events(rows), 500, 2000)
    assert len(task.hist_ids[0]) == MAX_HISTORY
    assert task.hist_ids[0][-1] == MAX_HISTORY + 4
    # the long history (co-visitation's) holds them all, and ends with the short one
    assert task.long_histories[0].tolist() == list(range(MAX_HISTORY + 5))
    assert task.long_times[0][-MAX_HISTORY:].tolist() == task.hist_ts[0].tolist()


def test_task_sampling_is_seeded() -> None:
    rows = [(u, u, "view", 1) for u in range(50)] + [(u, 1000 + u, "click", 10) for u in range(50)]
    a = next_item_task(_events(rows), 5, 20, max_users=10, seed=3)
    b = next_item_task(_events(rows), 5, 20, max_users=10, seed=3)
    assert len(a) == 10 and a.user_ids.tolist() == b.user_ids.tolist()


def test_empty_window_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty window"):
        next_item_task(EVENTS, 300, 300)


def test_exclude_history_drops_seen_items_and_padding() -> None:
    task = next_item_task(EVENTS, 200, 300)
    item_ids = np.array([10, 11, 12, 13])
    ranked = np.array([[0, 1, -1, 2, 3]])
    assert exclude_history(ranked, item_ids, task, 5) == [[12, 13]]
    assert exclude_history(ranked, item_ids, task, 1) == [[12]]


def test_history_matrix_right_aligns_and_weights_sum_to_one() -> None:
    task = next_item_task(EVENTS, 200, 300)
    rows, weights = history_matrix(task, {10: 0, 11: 1}, tau_s=100.0)
    assert rows.shape == (1, MAX_HISTORY)
    assert rows[0, -2:].tolist() == [0, 1] and (rows[0, :-2] == -1).all()
    assert weights[0].sum() == pytest.approx(1.0)
    assert weights[0, -1] > weights[0, -2]  # the newer item weighs more


def test_history_matrix_skips_unknown_items() -> None:
    task = next_item_task(EVENTS, 200, 300)
    rows, weights = history_matrix(task, {11: 0}, tau_s=100.0)
    assert rows[0, -1] == 0 and (rows[0, :-1] == -1).all()
    assert weights[0, -1] == pytest.approx(1.0)


def test_pooled_history_is_unit_norm() -> None:
    table = np.eye(3, dtype=np.float32)
    rows = np.array([[-1, 0, 1]])
    weights = np.array([[0.0, 0.5, 0.5]], dtype=np.float32)
    vec = pooled_history(table, rows, weights)
    assert np.linalg.norm(vec) == pytest.approx(1.0)
    assert vec[0, 2] == 0.0


def test_scores() -> None:
    task = next_item_task(EVENTS, 200, 300)
    perfect = score_recommendations([[12]], task, n_items=4, seconds=1.0)
    assert perfect["recall@10"] == 1.0 and perfect["ndcg@10"] == 1.0
    assert perfect["coverage@10"] == 0.25
    miss = score_recommendations([[13]], task, n_items=4, seconds=1.0)
    assert miss["recall@50"] == 0.0
    assert perfect["accuracy@100"] == 1.0 and perfect["n_users"] == 1
    assert "cold_recall@50" not in perfect


def test_cold_recall_counts_only_users_with_a_cold_target() -> None:
    rows = [(1, 10, "view", 1), (1, 11, "click", 20), (1, 12, "click", 21)]
    rows += [(2, 10, "view", 1), (2, 11, "click", 20)]
    task = next_item_task(_events(rows), 10, 30)
    assert task.targets == [{11, 12}, {11}]
    scored = score_recommendations([[12], [11]], task, n_items=3, seconds=1.0, cold_items={12})
    assert scored["cold_recall@50"] == 1.0 and scored["n_cold_users"] == 1
    assert scored["ci95"]["cold_recall@50"] == [1.0, 1.0]  # over the one cold user
    scored = score_recommendations([[11], [11]], task, n_items=3, seconds=1.0, cold_items={12})
    assert scored["cold_recall@50"] == 0.0
    assert list(cold_recall_per_user([[11, 12], [11]], task, {12}, k=1)) == [0.0]
    assert list(cold_recall_per_user([[11, 12], [11]], task, {12}, k=2)) == [1.0]
