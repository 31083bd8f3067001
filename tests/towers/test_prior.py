"""The retriever's popularity prior: decayed counts, the weight fit, saving and re-ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from towers.features import PriorLookup, rank_with_prior
from towers.prior import compute_prior, fit_prior_weight, load_prior, save_prior

DAY = 86_400


def events(rows: list[tuple[int, int]]) -> pd.DataFrame:
    """(item_id, ts) rows as a behaviour log."""
    return pd.DataFrame(
        {
            "user_id": np.zeros(len(rows), np.int64),
            "item_id": [r[0] for r in rows],
            "event_type": ["view"] * len(rows),
            "ts": [r[1] for r in rows],
            "session_id": np.zeros(len(rows), np.int64),
        }
    )


def test_recent_events_count_more_and_the_future_not_at_all() -> None:
    at = 100 * DAY
    log = events(
        [(1, at - DAY)] * 4  # item 1: 4 events a day ago
        + [(2, at - 30 * DAY)] * 4  # item 2: 4 events ten half-lives ago
        + [(3, at + DAY)] * 50  # item 3: only after `at`
    )
    prior = compute_prior(log, np.array([1, 2, 3, 4]), at, half_life_s=3 * DAY, weight=0.1)
    v = prior.values
    assert v.dtype == np.float32 and v.shape == (4,)
    assert v[0] > v[1] > v[2] == v[3]  # the future counts nothing, like an unseen item
    assert prior.default == pytest.approx(v[3])
    assert abs(float(v.mean())) < 1e-6 and float(v.std()) == pytest.approx(1.0, rel=1e-5)
    # an event a half-life old weighs half: two of them equal one fresh one
    log2 = events([(1, at - 1)] + [(2, at - 1 - 3 * DAY)] * 2 + [(3, at - 1)] * 3)
    v2 = compute_prior(log2, np.array([1, 2, 3]), at, half_life_s=3 * DAY).values
    assert v2[0] == pytest.approx(v2[1], abs=1e-5) and v2[2] > v2[0]
    with pytest.raises(ValueError, match="half_life_s"):
        compute_prior(log, np.array([1]), at, half_life_s=0)


def test_empty_log_gives_a_flat_prior() -> None:
    prior = compute_prior(events([]), np.array([5, 6]), 10)
    np.testing.assert_array_equal(prior.values, [0.0, 0.0])
    assert prior.default == 0.0


def test_fit_picks_the_best_and_the_smallest_on_ties() -> None:
    best, scores = fit_prior_weight(lambda w: -((w - 0.05) ** 2), (0.0, 0.03, 0.05, 0.1))
    assert best == 0.05 and set(scores) == {"0.0", "0.03", "0.05", "0.1"}
    best, _ = fit_prior_weight(lambda w: 1.0, (0.0, 0.1))
    assert best == 0.0


def test_save_and_load(tmp_path: Path) -> None:
    assert load_prior(tmp_path) is None  # artifacts from before the prior existed
    prior = compute_prior(events([(1, 5), (2, 6)]), np.array([1, 2, 3]), 10, 100.0, 0.07)
    save_prior(prior, tmp_path)
    back = load_prior(tmp_path)
    assert back is not None
    np.testing.assert_array_equal(back.values, prior.values)
    assert back.meta() == prior.meta()


def test_rank_with_prior_moves_popular_items_up_and_missing_last() -> None:
    scores = np.array([[0.9, 0.85, 0.5, -np.inf]], np.float32)
    ids = np.array([[10, 11, 12, -1]])
    prior = np.array([[0.0, 1.0, 5.0, 0.0]], np.float32)
    new, order = rank_with_prior(scores, ids, prior, 0.1)
    np.testing.assert_array_equal(order, [[12, 11, 10, -1]])
    np.testing.assert_allclose(new[0, :3], [1.0, 0.95, 0.9], rtol=1e-6)
    assert new[0, 3] == -np.inf
    _, same = rank_with_prior(scores, ids, prior, 0.0)
    np.testing.assert_array_equal(same, ids)


def test_lookup_by_id_with_default() -> None:
    lookup = PriorLookup(np.array([30, 10, 20]), np.array([3.0, 1.0, 2.0]), default=-7.0)
    np.testing.assert_array_equal(
        lookup(np.array([[10, 99], [30, -1]])), [[1.0, -7.0], [3.0, -7.0]]
    )
    assert PriorLookup(np.zeros(0), np.zeros(0), 0.5)(np.array([1]))[0] == 0.5
    with pytest.raises(ValueError, match="equal"):
        PriorLookup(np.array([1, 2]), np.array([1.0]), 0.0)


def test_half_life_is_chosen_on_validation_long_memory_wins_for_steady_sellers() -> None:
    """Items 0-9 sell steadily for two months and keep selling in the validation window;
    items 10-19 had a burst just before it and never sell again. A short half-life ranks the
    burst first; validation must pick a long memory (30 days or no decay) and a weight > 0."""
    from towers.prior import NO_DECAY_S, fit_model_prior

    day = 86_400
    at = 100 * day
    start = at - 3 * day  # the validation window of fit_model_prior
    rng = np.random.default_rng(0)
    rows = []
    for t in range(40 * day, start, day // 4):  # steady sellers, users 1000+
        rows.append((1000 + len(rows), int(rng.integers(0, 10)), "purchase", t))
    for j in range(400):  # the burst, just before the window
        rows.append((5000 + j, 10 + j % 10, "purchase", start - day + j * 100))
    for u in range(300):  # validation users: a history item, then a steady seller
        rows.append((9000 + u, 50 + u % 40, "view", start - 2 * day))
        rows.append((9000 + u, u % 10, "purchase", start + day + u))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])
    item_ids = np.arange(100, dtype=np.int64)
    vecs, users = _random_vectors(rng, 100)
    prior, scores = fit_model_prior(events, item_ids, at, users, vecs)
    assert prior.half_life_s in (30 * day, NO_DECAY_S) and prior.weight > 0
    assert scores[f"{prior.half_life_s / day:g}d/{prior.weight}"] > scores[f"1d/{prior.weight}"]
    assert len(scores) == 5 * 10  # every half-life x every weight


def test_a_random_split_model_fits_its_prior_on_a_random_share_of_the_events() -> None:
    """A random-split model's targets are spread over the whole range: its prior is fitted on
    the random share the co-visitation fit holds out, even when the newest days hold no event
    (where the time validation has nobody to fit on)."""
    from towers.prior import fit_model_prior

    day = 86_400
    at = 100 * day
    rng = np.random.default_rng(1)
    popular = rng.zipf(1.3, size=40_000) % 400  # a steep, steady popularity curve
    rows = []
    for u in range(400):
        items = np.unique(popular[u * 100 : (u + 1) * 100])[:12]
        for item in items:
            rows.append((u, int(item), "purchase", int(rng.integers(10 * day, 80 * day))))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])
    item_ids = np.arange(400, dtype=np.int64)
    vecs, users = _random_vectors(rng, 400)
    _, time_scores = fit_model_prior(events, item_ids, at, users, vecs)
    assert time_scores == {}  # nothing in the last 3 days
    prior, scores = fit_model_prior(events, item_ids, at, users, vecs, validation="random")
    assert len(scores) == 5 * 10 and prior.weight > 0  # popularity predicts held-out buys
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    with pytest.raises(ValueError, match="validation must be time or random"):
        fit_model_prior(events, item_ids, at, users, vecs, validation="future")


def test_a_random_split_models_prior_is_fitted_on_the_random_protocols_accuracy() -> None:
    """The random protocol judges top-100 accuracy, so a random-split model's prior is fitted
    on it (the time protocol's Recall@50 otherwise): each score is that metric of the ranking
    it names, checked by hand at weight 0 (cosine alone)."""
    from towers.metrics import ACCURACY_AT_100, RECALL_AT_50
    from towers.next_item import exclude_history
    from towers.prior import fit_model_prior, validation_split

    day = 86_400
    at = 100 * day
    rng = np.random.default_rng(2)
    popular = rng.zipf(1.3, size=40_000) % 400
    rows = []
    for u in range(400):
        for item in np.unique(popular[u * 100 : (u + 1) * 100])[:12]:
            rows.append((u, int(item), "purchase", int(rng.integers(10 * day, 80 * day))))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])
    item_ids = np.arange(400, dtype=np.int64)
    vecs = rng.standard_normal((400, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)

    def users(task) -> np.ndarray:  # the same vectors on every call
        u = np.random.default_rng(3).standard_normal((len(task), 8)).astype(np.float32)
        return u / np.linalg.norm(u, axis=1, keepdims=True)

    _, scores = fit_model_prior(events, item_ids, at, users, vecs, validation="random")
    _, explicit = fit_model_prior(
        events, item_ids, at, users, vecs, validation="random", metric=ACCURACY_AT_100
    )
    _, recall = fit_model_prior(
        events, item_ids, at, users, vecs, validation="random", metric=RECALL_AT_50
    )
    assert scores == explicit and scores != recall
    split = validation_split(events, at, "random")
    assert split is not None
    ranked = np.argsort(-(users(split.task) @ vecs.T), axis=1, kind="stable")
    for metric, fitted in ((ACCURACY_AT_100, scores), (RECALL_AT_50, recall)):
        lists = exclude_history(ranked, item_ids, split.task, metric.k)
        assert fitted["1d/0.0"] == pytest.approx(metric.mean(lists, split.task.targets))


def _random_vectors(rng: np.random.Generator, n_items: int):
    """Random unit item vectors ``[n_items, 8]`` and a task -> random unit user vectors map:
    towers that know nothing, so only the prior can rank."""
    vecs = rng.standard_normal((n_items, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)

    def users(task) -> np.ndarray:
        u = rng.standard_normal((len(task), 8)).astype(np.float32)
        return u / np.linalg.norm(u, axis=1, keepdims=True)

    return vecs, users
