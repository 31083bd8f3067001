"""The co-visitation table (towers/covisit.py): building, scoring, blending, fitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from towers.covisit import (
    CovisitTable,
    _fit_one_kind,
    blend_covisit,
    build_covisit,
    covisit_kind,
    covisit_rank,
    fit_model_covisit,
    reserve_share,
)
from towers.features import MAX_HISTORY
from towers.prior import validation_events


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


@pytest.mark.parametrize("kind", ["auto", "ease", "item_knn", "rp3beta"])
def test_build_finds_the_pairs(kind: str) -> None:
    events = pair_events()
    tab = build_covisit(events, np.arange(20), until_ts=None, kind=kind, n_neighbours=3)
    assert tab.kind == ("rp3beta" if kind == "auto" else kind)
    for item in range(0, 20, 2):
        ids, _ = tab.scores(np.array([item]))
        assert ids[0] == item + 1
    assert np.all(np.diff(tab.indptr) <= 3) and np.all(tab.weights > 0)
    # only events before the cut count
    empty = build_covisit(events, np.arange(20), until_ts=0, kind="item_knn")
    assert len(empty) == 0
    with pytest.raises(ValueError, match="kind"):
        build_covisit(events, np.arange(20), until_ts=None, kind="svd")
    # the kind the fits resolve before building anything is the one built
    assert covisit_kind(events, np.arange(20), until_ts=None, kind=kind) == tab.kind
    with pytest.raises(ValueError, match="kind"):
        covisit_kind(events, np.arange(20), until_ts=None, kind="svd")


def test_random_validation_fits_on_the_random_protocols_accuracy() -> None:
    from towers.metrics import ACCURACY_AT_100, RECALL_AT_50, fit_metric

    assert fit_metric("random") is ACCURACY_AT_100 and fit_metric("time") is RECALL_AT_50


def test_auto_fit_tries_ease_only_below_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import towers.covisit as covisit

    events = pair_events()
    assert covisit_kind(events, np.arange(20), until_ts=None) == "rp3beta"
    assert build_covisit(events, np.arange(20), until_ts=None).kind == "rp3beta"
    assert covisit._ease_fits(events, np.arange(20), None)
    monkeypatch.setattr(covisit, "COVISIT_EASE_MAX_ITEMS", 5)
    assert not covisit._ease_fits(events, np.arange(20), None)


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


def fit_inputs():
    """Pair events over 400 items (the validation window holds each user's last event, the
    partner of an item in the history), the cut, random user and item vectors."""
    events = pair_events(n_users=300, seed=1, n_pairs=200)
    events["ts"] = events["ts"] * 1000
    at = int(events["ts"].max()) + 1
    vectors = np.random.default_rng(2).normal(size=(400, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def users(task) -> np.ndarray:
        return np.random.default_rng(3).normal(size=(len(task), 8)).astype(np.float32)

    return events, at, users, vectors


def test_fit_gives_weight_where_pairs_predict_the_next_item() -> None:
    events, at, users, vectors = fit_inputs()
    tab, scores = fit_model_covisit(
        events, np.arange(400), at, users, vectors, validation_s=at - 300_000, n_candidates=5
    )
    assert scores and tab.weight > 0
    assert scores[str(tab.weight)] > scores["0.0"]
    # the history length and decay were searched too, and the fit is in the table
    assert f"history={tab.history},decay={tab.decay}" in scores
    assert "cold@text" in scores and 0 <= tab.cold_share < 1


def test_fit_with_a_prior_ranks_with_it() -> None:
    """The weight search re-ranks with the model's prior when it has one (the served order)."""
    from towers.prior import compute_prior

    events, at, users, vectors = fit_inputs()
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


def test_random_validation_fits_on_a_random_share_of_every_event() -> None:
    """For a model of the random protocol the fit holds out a random share of all the events
    (not the newest window) and excludes every other item of the user, as that protocol
    does: pairs still predict their partner, so the table gets weight."""
    events, at, users, vectors = fit_inputs()
    tab, scores = fit_model_covisit(
        events, np.arange(400), at, users, vectors, n_candidates=5, validation="random"
    )
    assert scores and tab.weight > 0 and scores[str(tab.weight)] > scores["0.0"]
    with pytest.raises(ValueError, match="validation must be time or random"):
        fit_model_covisit(events, np.arange(400), at, users, vectors, validation="future")


def test_validation_events_are_the_window_or_a_random_share_before_the_cut() -> None:
    """The one definition of what the fits validate on (the holdout towers train without
    it): the newest window, or a random share, and never an event at or after the cut."""
    from towers.prior import VALIDATION_S

    events, at, _, _ = fit_inputs()
    ts = events["ts"].to_numpy()
    cut = int(np.quantile(ts, 0.8))
    window = validation_events(events, cut, "time")
    np.testing.assert_array_equal(window, (ts < cut) & (ts >= cut - VALIDATION_S))
    narrow = validation_events(events, cut, "time", validation_s=1000.0)
    np.testing.assert_array_equal(narrow, (ts < cut) & (ts >= cut - 1000))
    share = validation_events(events, cut, "random", seed=5)
    assert not share[ts >= cut].any()
    assert 0.05 < share[ts < cut].mean() < 0.15  # RANDOM_VALIDATION_FRAC = 0.1
    np.testing.assert_array_equal(share, validation_events(events, cut, "random", seed=5))
    assert not np.array_equal(share, validation_events(events, cut, "random", seed=6))
    with pytest.raises(ValueError, match="validation must be time or random"):
        validation_events(events, at, "future")


def test_a_model_of_a_random_split_is_validated_at_random() -> None:
    from towers.data import Dataset
    from towers.train import covisit_validation_kind

    events, _, _, _ = fit_inputs()
    plain = Dataset(items=pd.DataFrame(), events=events)
    record = {"protocol": "random", "test_frac": 0.2, "seed": 7}
    split = Dataset(items=pd.DataFrame(), events=events, meta={"split": record})
    assert covisit_validation_kind(plain, None) == "time"
    assert covisit_validation_kind(split, 123) == "time"  # a time cut: the next events
    assert covisit_validation_kind(split, None) == "random"


def chain(n: int = 6, **settings: float) -> CovisitTable:
    """Items 0..n-1; item i's only neighbour is item 10 + i (weight 1); items 10.. have none."""
    ids = np.concatenate([np.arange(n), 10 + np.arange(n)]).astype(np.int64)
    indptr = np.concatenate([np.arange(n + 1), np.full(n, n)]).astype(np.int64)
    return CovisitTable(
        ids, indptr, 10 + np.arange(n, dtype=np.int64), np.ones(n, np.float32), "ease", 1.0
    ).with_settings(**settings)


def test_neighbours_read_the_newest_history_once_per_item_with_decay() -> None:
    # history oldest first: 0, 1, 2, 1 -> distinct newest first: 1 (pos 0), 2 (pos 1), 0 (pos 3)
    hist = np.array([0, 1, 2, 1])
    ids, scores = chain(decay=0.5).neighbours(hist)
    assert ids.tolist() == [11, 12, 10]
    np.testing.assert_allclose(scores, [1.0, 0.5, 0.125])
    ids, scores = chain().neighbours(hist)  # no decay: each distinct item once, equal weights
    assert ids.tolist() == [10, 11, 12] and np.all(scores == 1.0)
    ids, _ = chain(history=2).neighbours(hist)  # only the newest two events: 2 and 1
    assert ids.tolist() == [11, 12]


def test_request_weight_ramps_with_history_length() -> None:
    assert chain(weight=0.4).request_weight(1) == pytest.approx(0.4)
    tab = chain(weight=0.4, ramp=4, history=3)
    assert tab.request_weight(1) == pytest.approx(0.1)
    assert tab.request_weight(10) == pytest.approx(0.3)  # counts at most `history` items


def test_cold_items_are_those_without_neighbours() -> None:
    assert chain().is_cold(np.array([0, 5, 10, 99])).tolist() == [False, False, True, True]


def test_reserve_share_keeps_a_share_of_every_prefix() -> None:
    ids = np.arange(10, dtype=np.int64)
    scores = np.linspace(1, 0, 10, dtype=np.float32)
    cold = np.isin(ids, [7, 8, 9])
    out, out_scores = reserve_share(ids, scores, cold, 0.25)
    assert sorted(out.tolist()) == ids.tolist()
    for p in range(1, 11):
        assert cold[out[:p]].sum() >= min(3, int(0.25 * p))
    assert out.tolist() == [0, 1, 2, 7, 3, 4, 5, 8, 6, 9]
    np.testing.assert_array_equal(out_scores, scores)  # scores stay by place: still sorted
    head, _ = reserve_share(ids, scores, cold, 0.25, limit=4)  # only the first 4 places
    assert head.tolist() == [0, 1, 2, 7, 3, 4, 5, 6, 8, 9]
    same, _ = reserve_share(ids, scores, cold, 0.0)
    assert same.tolist() == ids.tolist()


def test_covisit_rank_blends_drops_and_reserves() -> None:
    tab = chain(weight=1000.0)
    cand = np.array([10, 20, 21, 22], np.int64)
    base = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    out, _ = covisit_rank(cand, base, 0.5, tab, np.array([1, 2]))
    assert out[:2].tolist() == [11, 12]  # neighbours first at a huge weight
    out, _ = covisit_rank(cand, base, 0.5, tab, np.array([1, 2]), drop=np.array([11]))
    assert 11 not in out.tolist() and out[0] == 12
    out, _ = covisit_rank(cand, base, 0.5, tab, np.array([1, 2]), max_new=1)
    assert 12 not in out.tolist()
    # a ring: item i's neighbour is (i + 1) % 6, so all of 0..5 are warm; 20, 21 are cold
    ring = CovisitTable(
        np.arange(6, dtype=np.int64),
        np.arange(7, dtype=np.int64),
        (np.arange(6, dtype=np.int64) + 1) % 6,
        np.ones(6, np.float32),
        "ease",
        1000.0,
    )
    warm = np.array([0, 1, 2, 20, 21], np.int64)
    scores5 = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    out, _ = covisit_rank(warm, scores5, 0.5, ring, np.array([3]))
    assert out.tolist() == [4, 0, 1, 2, 20, 21]
    out, _ = covisit_rank(warm, scores5, 0.5, ring.with_settings(cold_share=0.5), np.array([3]))
    assert out.tolist() == [4, 20, 0, 21, 1, 2]
    unchanged, _ = covisit_rank(cand, base, 0.5, tab.with_weight(0.0), np.array([1]))
    assert unchanged.tolist() == cand.tolist()


def test_settings_round_trip_and_old_tables_read_with_defaults(tmp_path: Path) -> None:
    tab = chain(weight=0.3, history=200, decay=0.9, ramp=10, cold_share=0.1)
    tab.save(tmp_path / "t.npz")
    assert CovisitTable.load(tmp_path / "t.npz").settings() == tab.settings()
    with open(tmp_path / "old.npz", "wb") as f:  # a table saved before the settings existed
        np.savez(
            f,
            item_ids=tab.item_ids,
            indptr=tab.indptr,
            neighbour_ids=tab.neighbour_ids,
            weights=tab.weights,
            kind=np.array("ease"),
            weight=np.array(0.5),
        )
    old = CovisitTable.load(tmp_path / "old.npz")
    assert old.settings() == {
        "weight": 0.5,
        "history": MAX_HISTORY,
        "decay": 1.0,
        "ramp": 0,
        "cold_share": 0.0,
    }
    assert old.l2 == 500.0  # a table saved before the ridge was fitted: Steck's default
    ridged = chain().with_settings(weight=1.0)
    object.__setattr__(ridged, "l2", 100.0)
    ridged.save(tmp_path / "r.npz")
    assert CovisitTable.load(tmp_path / "r.npz").l2 == 100.0
    assert (old.alpha, old.beta) == (0.5, 0.3)  # saved before RP3beta: the defaults
    walked = chain().with_settings(weight=1.0)
    object.__setattr__(walked, "alpha", 0.7)
    object.__setattr__(walked, "beta", 0.1)
    walked.save(tmp_path / "w.npz")
    params = CovisitTable.load(tmp_path / "w.npz").params()
    assert params == {"l2": 500.0, "alpha": 0.7, "beta": 0.1}
    assert chain().fitted_like(tab).settings() == tab.settings()
    with pytest.raises(ValueError, match="unknown settings"):
        chain(gamma=1.0)
    for bad in ({"history": 0}, {"decay": 0.0}, {"ramp": -1}, {"cold_share": 1.0}, {"weight": -1}):
        with pytest.raises(ValueError):
            chain(**bad)
    with pytest.raises(ValueError, match="neighbour id"):
        CovisitTable(np.array([1, 2]), np.array([0, 1, 1]), np.array([7]), np.array([1.0]))


def test_limited_neighbours_are_the_first_of_the_whole_list() -> None:
    rng = np.random.default_rng(4)
    n = 60
    ids = np.arange(n, dtype=np.int64) * 7
    counts = rng.integers(0, 6, n)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nbrs = rng.choice(ids, size=int(counts.sum()))
    weights = rng.integers(1, 3, size=len(nbrs)).astype(np.float32)  # many ties
    tab = CovisitTable(ids, indptr, nbrs, weights, "ease", 1.0)
    for _ in range(20):
        hist = rng.choice(ids, size=int(rng.integers(1, 30)))
        all_ids, all_scores = tab.neighbours(hist)
        for limit in (1, 3, 10, 1000):
            got, scores = tab.neighbours(hist, limit)
            assert got.tolist() == all_ids[:limit].tolist()
            np.testing.assert_array_equal(scores, all_scores[:limit])


def test_auto_fits_every_kind_and_leaves_rp3beta_only_for_a_surely_better_one() -> None:
    """Where EASE fits, ``auto`` fits RP3beta, EASE and item-kNN tables on the same
    validation users and keeps another kind than RP3beta only when its paired Recall@50 gain
    is surely above 0 (the best such kind); a named kind is fitted alone."""
    from towers.metrics import paired_gain

    events, at, users, vectors = fit_inputs()
    kw = {"validation_s": at - 300_000, "n_candidates": 5}
    tab, scores = fit_model_covisit(events, np.arange(400), at, users, vectors, **kw)
    keys = {"kind=ease", "kind=item_knn", "kind=rp3beta", "final"}
    assert keys | {"kind_gain_lo=item_knn", "kind_gain_lo=ease"} <= set(scores)
    sure = {k: scores[f"kind={k}"] for k in ("item_knn", "ease")
            if scores[f"kind_gain_lo={k}"] > 0}  # fmt: skip
    best_other = max(("item_knn", "ease"), key=lambda k: scores[f"kind={k}"])
    assert tab.kind == (best_other if best_other in sure else "rp3beta")
    assert scores["final"] == scores[f"kind={tab.kind}"]
    assert any(k.startswith("alpha=") for k in scores) == (tab.kind == "rp3beta")
    for kind in ("ease", "item_knn", "rp3beta"):
        alone, alone_scores = fit_model_covisit(
            events, np.arange(400), at, users, vectors, kind=kind, **kw
        )
        assert alone.kind == kind and "kind=rp3beta" not in alone_scores
        assert alone_scores["final"] == pytest.approx(scores[f"kind={kind}"])
    # the rule itself: a sure gain has an interval above 0, a gain of one user in 300 not
    better = np.r_[np.ones(150), np.zeros(150)]
    assert paired_gain(better, np.zeros(300))[1] > 0
    one = np.r_[1.0, np.zeros(299)]
    assert paired_gain(one, np.zeros(300))[1] <= 0
    assert paired_gain(np.zeros(0), np.zeros(0)) == (0.0, 0.0, 0.0)


def test_cold_share_is_the_best_for_cold_items_among_those_not_surely_worse() -> None:
    from towers.covisit import choose_cold_share

    rng = np.random.default_rng(0)
    base = rng.random(900)

    def jitter() -> np.ndarray:  # per-user differences around 0: noise, not a loss
        return rng.choice([-0.02, 0.0, 0.02], size=900)

    noise = {0.0: base, 0.05: base + jitter(), 0.1: base + jitter(), 0.3: base - 0.2}
    cold = {0.0: 0.01, 0.05: 0.09, 0.1: 0.11, 0.3: 0.2}
    # 0.3 is best on cold targets but surely worse overall; 0.1 costs only noise
    assert choose_cold_share(noise, cold) == 0.1
    flat = {s: base for s in (0.0, 0.05, 0.1)}
    assert choose_cold_share(flat, {0.0: 0.1, 0.05: 0.1, 0.1: 0.1}) == 0.0  # ties: smaller
    # every share costs overall, surely: without a floor no share is kept ...
    costly = {0.0: base, 0.05: base - 0.05, 0.1: base - 0.06, 0.3: base - 0.2}
    cold4 = {0.0: 0.0, 0.05: 0.03, 0.1: 0.06, 0.3: 0.2}
    assert choose_cold_share(costly, cold4) == 0.0
    # ... with the towers' own cold recall as the floor, the cheapest share that reaches it
    assert choose_cold_share(costly, cold4, text_cold=0.04) == 0.1
    assert choose_cold_share(costly, cold4, text_cold=0.02) == 0.05
    # within noise of the best, the best cold share among those reaching the floor
    assert choose_cold_share(noise, cold, text_cold=0.1) == 0.1
    # nothing reaches the floor: the rule without it
    assert choose_cold_share(noise, cold, text_cold=0.5) == 0.1


def test_an_ease_table_fits_its_ridge_on_validation_unless_it_has_one_candidate() -> None:
    """Each candidate ridge ranks the validation users with the table alone; the first (500)
    stays unless another is surely better, the table and the final build carry the choice,
    and item-kNN tables have no ridge to fit."""
    from towers.covisit import EASE_L2S

    events, at, users, vectors = fit_inputs()
    kw = {"validation_s": at - 300_000, "n_candidates": 5, "kind": "ease"}
    tab, scores = fit_model_covisit(events, np.arange(400), at, users, vectors, **kw)
    assert {f"l2={x:g}" for x in EASE_L2S} <= set(scores)
    assert all(0.0 <= scores[f"l2={x:g}"] <= 1.0 for x in EASE_L2S)
    assert tab.l2 in EASE_L2S
    one, one_scores = _fit_one_kind(
        events, np.arange(400), at, users, vectors, ease_l2s=(300.0,), **kw
    )
    assert one.l2 == 300.0 and not any(k.startswith("l2=") for k in one_scores)
    knn, knn_scores = fit_model_covisit(
        events, np.arange(400), at, users, vectors, **{**kw, "kind": "item_knn"}
    )
    assert knn.kind == "item_knn" and not any(k.startswith("l2=") for k in knn_scores)
    with pytest.raises(ValueError, match="l2 must be > 0"):
        build_covisit(events, np.arange(400), until_ts=None, kind="ease", l2=0.0)
    with pytest.raises(ValueError, match="at least one ridge"):
        _fit_one_kind(events, np.arange(400), at, users, vectors, ease_l2s=(), **kw)


def test_the_ridge_shapes_an_ease_table_and_is_recorded_in_it() -> None:
    events = pair_events(n_users=80, seed=2)
    low = build_covisit(events, np.arange(20), until_ts=None, kind="ease", l2=1.0)
    high = build_covisit(events, np.arange(20), until_ts=None, kind="ease", l2=5000.0)
    assert low.l2 == 1.0 and high.l2 == 5000.0
    assert not np.allclose(low.weights[:5], high.weights[:5])  # the ridge shapes the weights


def test_rp3beta_parameters_shape_the_table_and_are_recorded_in_it() -> None:
    """``beta`` divides by the target's popularity: a higher one moves a popular item down
    the neighbours of an item it was bought with; ``alpha`` and ``beta`` travel with the
    table (an update recounts with them); bad values name what is allowed."""
    events = pair_events(n_users=80, seed=2)
    # item 0 is also bought by 40 more users: the most popular item by far
    extra = pd.DataFrame(
        [(1000 + u, 0, 5, "purchase") for u in range(40)]
        + [(1000 + u, 2 * (u % 10) + 1, 6, "purchase") for u in range(40)],
        columns=events.columns,
    )
    events = pd.concat([events, extra], ignore_index=True)
    flat = build_covisit(events, np.arange(20), until_ts=None, kind="rp3beta", beta=0.0)
    steep = build_covisit(events, np.arange(20), until_ts=None, kind="rp3beta", beta=1.0)
    assert (flat.alpha, flat.beta, steep.beta) == (0.5, 0.0, 1.0)

    def rank_of_0(tab: CovisitTable, item: int) -> int:
        ids, _ = tab.scores(np.array([item]))
        return int(np.flatnonzero(ids == 0)[0])

    assert rank_of_0(steep, 3) > rank_of_0(flat, 3)
    for bad in ({"alpha": 0.0}, {"beta": -0.1}):
        with pytest.raises(ValueError, match="alpha|beta"):
            build_covisit(events, np.arange(20), until_ts=None, kind="rp3beta", **bad)
