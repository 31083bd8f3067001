"""Collaborative baselines on a matrix whose structure is known: two groups of users, each
buying within one group of items; a user who bought from one group must be recommended the
rest of that group first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from towers.evaluation.collaborative import (
    ALS,
    EASE,
    ItemKNN,
    RP3Beta,
    interactions,
    top_k_excluding,
)

GROUP_A = [10, 11, 12, 13, 14]
GROUP_B = [20, 21, 22, 23, 24]
ITEMS = np.array(GROUP_A + GROUP_B + [30], dtype=np.int64)  # 30: never interacted with


def _events() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for user in range(40):
        group = GROUP_A if user < 20 else GROUP_B
        for item in rng.choice(group, size=3, replace=False):
            rows.append((user, int(item), 100 + len(rows)))
    rows.append((99, 999, 5))  # an item outside the catalog: ignored
    return pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])


def test_interactions_are_binary_and_cut_by_time() -> None:
    ev = _events()
    dup = pd.concat([ev, ev.iloc[:1]])
    data = interactions(dup, ITEMS)
    assert data.matrix.max() == 1.0
    assert data.matrix.shape == (40, len(ITEMS))  # user 99 has no catalog item: no row
    assert data.matrix.sum() == 120
    early = interactions(ev, ITEMS, until_ts=110)
    assert early.matrix.sum() == 10  # ts 100..109 (the ts-5 event's item is unknown)


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [(ItemKNN, {}), (RP3Beta, {}), (EASE, {}), (ALS, {"factors": 2, "iterations": 30})],
)
def test_a_user_gets_the_rest_of_their_group_first(kind: type, kwargs: dict) -> None:
    data = interactions(_events(), ITEMS)
    model = kind(data, **kwargs)
    hist = [np.array([10, 11]), np.array([23])]
    rows = data.user_rows([1000, 1001], hist)  # new users, known only by their history
    assert rows.sum() == 3
    top = top_k_excluding(model.scores(rows), ITEMS, hist, 3)
    assert set(top[0]) <= set(GROUP_A) - {10, 11}
    assert set(top[1]) <= set(GROUP_B) - {23}
    assert len(top[0]) == 3


def test_top_k_excluding_drops_history_and_breaks_ties_by_catalog_order() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 0.5]], dtype=np.float32)
    ids = np.array([5, 6, 7, 8])
    assert top_k_excluding(scores, ids, [np.array([6])], 2) == [[7, 5]]
    assert top_k_excluding(scores, ids, [np.array([], dtype=np.int64)], 10) == [[6, 7, 5, 8]]


def test_ease_refuses_too_many_items(monkeypatch: pytest.MonkeyPatch) -> None:
    import towers.cooccurrence as collab

    monkeypatch.setattr(collab, "EASE_MAX_ITEMS", 3)
    with pytest.raises(ValueError, match="at most 3 items"):
        EASE(interactions(_events(), ITEMS))


def test_ease_ridge_is_chosen_on_the_window_before_the_cut() -> None:
    """The baseline gets the served table's chance: each ridge ranks the users of the last
    days before the cut, with only the events before those days; the default stays unless
    another is surely better."""
    from towers.covisit import EASE_L2S
    from towers.evaluation.collaborative import fit_ease_l2

    rng = np.random.default_rng(1)
    rows = []
    for user in range(60):
        group = GROUP_A if user < 30 else GROUP_B
        picks = rng.choice(group, size=4, replace=False)
        for day, item in zip((0, 1, 2, 9), picks):  # the last one inside the window
            rows.append((user, int(item), "click", day * 86_400 + user))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])
    at = 10 * 86_400
    l2, scores = fit_ease_l2(events, ITEMS, at)
    assert l2 in EASE_L2S and set(scores) == {f"l2={x:g}" for x in EASE_L2S}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores["l2=500"] > 0.5  # the rest of the user's group ranks first
    assert fit_ease_l2(events, ITEMS, at, l2s=(42.0,)) == (42.0, {})
    assert fit_ease_l2(events, ITEMS, 86_400) == (EASE_L2S[0], {})  # nothing before the window
    l2, scores = fit_ease_l2(events, ITEMS, at, validation="random")
    assert l2 in EASE_L2S
    with pytest.raises(ValueError, match="validation must be time or random"):
        fit_ease_l2(events, ITEMS, at, validation="future")


def test_rp3beta_is_the_random_walk_over_the_matrix() -> None:
    """On a 3-user matrix small enough to walk by hand: ``W[i, j] = sum_u P(u | i) ** a *
    P(j | u) ** a / deg_j ** b``, zero diagonal."""
    from towers.cooccurrence import rp3beta_similarity

    items = np.array([1, 2, 3])
    ev = pd.DataFrame(
        [(0, 1, 1), (0, 2, 2), (1, 1, 3), (1, 3, 4), (2, 1, 5), (2, 2, 6), (2, 3, 7)],
        columns=["user_id", "item_id", "ts"],
    )
    x = interactions(ev, items).matrix.toarray()
    deg_u, deg_i = x.sum(1), x.sum(0)
    for alpha, beta in ((1.0, 0.0), (0.5, 0.3)):
        want = ((x / deg_i).T ** alpha) @ ((x / deg_u[:, None]) ** alpha) / deg_i**beta
        np.fill_diagonal(want, 0.0)
        got = rp3beta_similarity(interactions(ev, items).matrix, alpha, (beta,), 10)[beta]
        np.testing.assert_allclose(got.toarray(), want, rtol=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        rp3beta_similarity(interactions(ev, items).matrix, 0.0, (0.3,), 10)


def test_rp3beta_parameters_are_chosen_on_the_window_before_the_cut() -> None:
    from towers.covisit import RP3_ALPHAS, RP3_BETAS
    from towers.evaluation.collaborative import fit_rp3beta

    rng = np.random.default_rng(1)
    rows = []
    for user in range(60):
        group = GROUP_A if user < 30 else GROUP_B
        picks = rng.choice(group, size=4, replace=False)
        for day, item in zip((0, 1, 2, 9), picks):
            rows.append((user, int(item), "click", day * 86_400 + user))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])
    (alpha, beta), scores = fit_rp3beta(events, ITEMS, 10 * 86_400)
    assert alpha in RP3_ALPHAS and beta in RP3_BETAS
    assert len(scores) == len(RP3_ALPHAS) * len(RP3_BETAS)
    assert scores["alpha=0.5,beta=0.3"] > 0.5  # the rest of the user's group ranks first
    assert fit_rp3beta(events, ITEMS, 86_400) == ((RP3_ALPHAS[0], RP3_BETAS[0]), {})
