"""Training examples from the behaviour log: next-new-item pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from towers.examples import history_pairs, positions
from towers.features import MAX_HISTORY

ITEMS = pd.DataFrame({"item_id": [100, 101, 102, 103, 104]})


def _events(rows: list[tuple[int, int, str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts", "session_id"])


def test_pairs_end_before_the_first_touch_of_the_target() -> None:
    ev = _events(
        [
            (1, 100, "view", 10, 0),
            (1, 101, "view", 20, 0),
            (1, 102, "view", 30, 0),  # first touch of 102
            (1, 102, "click", 40, 0),  # -> target 102, history [100, 101]
            (1, 102, "purchase", 50, 0),  # same (user, session, item): no second pair
            (1, 100, "click", 60, 0),  # 100 is already in the history: dropped
        ]
    )
    pairs = history_pairs(ev, positions(ITEMS), 100, np.random.default_rng(0))
    assert pairs.target_pos.tolist() == [2]
    assert pairs.target_ts.tolist() == [40]
    assert pairs.hist_pos[0, -2:].tolist() == [0, 1]
    assert (pairs.hist_pos[0, :-2] == -1).all()
    assert pairs.hist_ts[0, -2:].tolist() == [10, 20]


def test_no_pair_without_history_and_users_do_not_mix() -> None:
    ev = _events(
        [
            (1, 100, "click", 10, 0),  # nothing before it
            (2, 101, "view", 5, 1),
            (2, 103, "view", 6, 1),
            (2, 103, "add_to_cart", 7, 1),  # target 103, history [101] (not user 1's items)
        ]
    )
    pairs = history_pairs(ev, positions(ITEMS), 100, np.random.default_rng(0))
    assert pairs.target_pos.tolist() == [3]
    assert pairs.hist_pos[0, -1] == 1 and (pairs.hist_pos[0, :-1] == -1).all()


def test_history_is_capped_and_sampling_respects_max_pairs() -> None:
    rows = [(1, 100 + (i % 2), "view", i, 0) for i in range(MAX_HISTORY + 5)]
    rows += [(1, 104, "click", 1000, 0), (1, 103, "click", 1001, 1), (1, 102, "click", 1002, 2)]
    pairs = history_pairs(_events(rows), positions(ITEMS), 2, np.random.default_rng(0))
    assert len(pairs.target_pos) == 2
    assert (pairs.hist_pos >= 0).all()  # full windows of MAX_HISTORY items
    assert pairs.since(1001).target_ts.min() >= 1001
