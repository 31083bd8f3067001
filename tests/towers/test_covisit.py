"""The co-visitation table (towers/covisit.py): building, scoring, blending, fitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from towers.covisit import (
    CovisitTable,
    blend_covisit,
    build_covisit,
    fit_model_covisit,
)


def table() -> CovisitTable:
    # item 1 -> 2 (0.5), 3 (0.25); item 2 -> 3 (1.0); item 3: none
    return CovisitTable(
        np.array([1, 2, 3], np.int64),
        np.array([0, 2, 3, 3], np.int64),
        np.array([2, 3, 3], np.int64),
        np.array([0.5, 0.25, 1.0], np.float32),
        "item_knn",
        0.3,
    )


def test_scores_sum_the_history_rows_and_normalise() -> None:
    ids, scores = table().scores(np.array([1, 2, 99]))
    assert ids.tolist() == [3, 2]
    np.testing.assert_allclose(scores, [1.0, 0.5 / 1.25])
    ids, scores = table().scores(np.array([1]), np.array([2.0]))
    assert ids.tolist() == [2, 3] and scores[0] == 1.0
    for empty in ([], [3], [99]):
        ids, scores = table().scores(np.array(empty, np.int64))
        assert len(ids) == 0 and len(scores) == 0


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    table().save(tmp_path / "t.npz")
    back = CovisitTable.load(tmp_path / "t.npz")
    assert back.kind == "item_knn" and back.weight == pytest.approx(0.3)
    np.testing.assert_array_equal(back.neighbour_ids, table().neighbour_ids)
    (tmp_path / "bad.npz").write_bytes(b"not a table")
    with pytest.raises(ValueError, match="bad.npz is not a co-visitation table"):
        CovisitTable.load(tmp_path / "bad.npz")


def test_inconsistent_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="indptr"):
        CovisitTable(np.array([1, 2]), np.array([0, 1]), np.array([2]), np.array([1.0]))
    with pytest.raises(ValueError, match="sorted"):
        CovisitTable(np.array([2, 1]), np.array([0, 0, 0]), np.zeros(0), np.zeros(0))


def pair_events(n_users: int = 60, seed: int = 0, n_pairs: int = 10) -> pd.DataFrame:
    """Users who take item 2k also take item 2k+1 (``n_pairs`` pairs), an event a minute."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for t, pair in enumerate(rng.choice(n_pairs, size=3, replace=False)):
            rows += [
                (u, 2 * pair, 120 * t, "purchase"),
                (u, 2 * pair + 1, 120 * t + 60, "purchase"),
            ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "event_type"])


@pytest.mark.parametrize("kind", ["auto", "ease", "item_knn"])
def test_build_finds_the_pairs(kind: str) -> None:
    events = pair_events()
    tab = build_covisit(events, np.arange(20), until_ts=None, kind=kind, n_neighbours=3)
    assert tab.kind == ("ease" if kind == "auto" else kind)
    for item in range(0, 20, 2):
        ids, _ = tab.scores(np.array([item]))
        assert ids[0] == item + 1
    assert np.all(np.diff(tab.indptr) <= 3) and np.all(tab.weights > 0)
    # only events before the cut count
    empty = build_covisit(events, np.arange(20), until_ts=0, kind="item_knn")
    assert len(empty) == 0
    with pytest.raises(ValueError, match="kind"):
        build_covisit(events, np.arange(20), until_ts=None, kind="svd")


def test_blend_merges_and_ranks_the_union() -> None:
    ids = np.array([10, 11, 12], np.int64)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    # weight 0 or no neighbours: unchanged
    out, _ = blend_covisit(ids, scores, 0.7, np.array([12]), np.array([1.0]), 0.0)
    assert out.tolist() == [10, 11, 12]
    out, s = blend_covisit(
        ids, scores, 0.7, np.array([12, 50], np.int64), np.array([1.0, 0.5], np.float32), 0.3
    )
    assert out.tolist() == [12, 10, 50, 11]
    np.testing.assert_allclose(s, [1.0, 0.9, 0.85, 0.8], rtol=1e-6)
    # a prior lifts the new candidate too
    out, _ = blend_covisit(
        ids,
        scores,
        0.7,
        np.array([50], np.int64),
        np.array([1.0], np.float32),
        0.3,
        prior=lambda x: np.full(len(x), 1.0, np.float32),
        prior_weight=0.1,
    )
    assert out[0] == 50


def test_fit_gives_weight_where_pairs_predict_the_next_item() -> None:
    events = pair_events(n_users=300, seed=1, n_pairs=200)
    # validation window: each user's last event, the partner of an item in the history
    events["ts"] = events["ts"] * 1000
    at = int(events["ts"].max()) + 1
    vectors = np.random.default_rng(2).normal(size=(400, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    users = lambda task: np.random.default_rng(3).normal(size=(len(task), 8)).astype(np.float32)  # noqa: E731
    tab, scores = fit_model_covisit(
        events, np.arange(400), at, users, vectors, validation_s=at - 300_000, n_candidates=5
    )
    assert scores and tab.weight > 0
    assert scores[str(tab.weight)] > scores["0.0"]


def test_fit_with_a_prior_ranks_with_it() -> None:
    """The weight search re-ranks with the model's prior when it has one (the served order)."""
    from towers.prior import compute_prior

    events = pair_events(n_users=300, seed=1, n_pairs=200)
    events["ts"] = events["ts"] * 1000
    at = int(events["ts"].max()) + 1
    vectors = np.random.default_rng(2).normal(size=(400, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    users = lambda task: np.random.default_rng(3).normal(size=(len(task), 8)).astype(np.float32)  # noqa: E731
    prior = compute_prior(events, np.arange(400), at, 86_400.0, weight=0.2)
    tab, scores = fit_model_covisit(
        events,
        np.arange(400),
        at,
        users,
        vectors,
        validation_s=at - 300_000,
        n_candidates=5,
        prior=prior,
    )
    assert scores and tab.weight > 0
    assert all(0.0 <= s <= 1.0 for s in scores.values())
